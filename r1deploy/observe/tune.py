"""`r1deploy tune`'s sweep: which engine settings to try on a node, and which one wins. Pure.

The knobs (issue 22 item 6), each only where it is valid for the node:
- ``max-num-batched-tokens`` (the prefill chunk) and ``max-num-seqs`` (the decode batch): everywhere;
- ``kv-cache-dtype`` fp8 on/off: GPUs with FP8 (Hopper, Ada, MI300), never the CPU backend;
- ``kv-offload`` on/off (planner/offload.py): GPU nodes without a KV connector of their own.

The sweep is bounded and coordinate-wise, not a grid (4 knobs × 2-3 values would be up to 36 servers,
hours of capacity searches): round one is the baseline (the node as the inventory renders it) and every
knob moved alone (halved and doubled, or toggled); round two is one candidate combining every knob whose
own move beat the baseline. The winner is the highest SLO capacity, and only if it beats the baseline by
MIN_GAIN (a change within the search's own resolution is noise, not a win); ties go to fewer changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BATCHED, SEQS, KV_DTYPE, OFFLOAD = "max-num-batched-tokens", "max-num-seqs", "kv-cache-dtype", "kv-offload"
MIN_GAIN = 0.05
MAX_CANDIDATES = 8
MIN_BATCHED = 256


@dataclass(frozen=True)
class Baseline:
    """The node's engine settings as the inventory renders them, and which knobs are valid there."""

    batched: int
    seqs: int
    fp8_kv: bool
    offload: bool
    fp8_kv_valid: bool
    offload_valid: bool
    assumed: tuple[str, ...] = ()  # knobs not rendered: vLLM's own default stands, assumed here


@dataclass(frozen=True)
class Candidate:
    label: str
    changes: dict[str, Any] = field(default_factory=dict)  # knob -> value; {} is the baseline


def vllm_defaults(gpu_memory_gib: float, gpu_name: str) -> tuple[int, int]:
    """vLLM 0.26's serving defaults (EngineArgs._set_default_max_num_seqs_and_batched_tokens_args):
    8,192 tokens and 1,024 sequences on GPUs of 70 GiB and more except the A100, else 2,048 and 256."""
    return (8192, 1024) if gpu_memory_gib >= 70 and "a100" not in gpu_name.lower() else (2048, 256)


def baseline_of(engine_args: dict[str, Any], device: str, gpu_fp8: bool, defaults: tuple[int, int],
                connector: bool = False) -> Baseline:
    """From the rendered engine args (vllm.yaml's keys) of the node."""
    batched, seqs = engine_args.get(BATCHED), engine_args.get(SEQS)
    assumed = tuple(k for k, v in ((BATCHED, batched), (SEQS, seqs)) if v is None)
    gpu = device != "cpu"
    return Baseline(batched=int(batched or defaults[0]), seqs=int(seqs or defaults[1]),
                    fp8_kv=str(engine_args.get(KV_DTYPE, "auto")).startswith("fp8"),
                    offload=bool(engine_args.get("kv-offloading-size")), fp8_kv_valid=gpu and gpu_fp8,
                    offload_valid=gpu and not connector, assumed=assumed)


def knob_values(base: Baseline) -> dict[str, list[Any]]:
    """Each valid knob's values other than the baseline's."""
    values: dict[str, list[Any]] = {
        BATCHED: [v for v in (base.batched // 2, base.batched * 2) if v >= max(MIN_BATCHED, base.seqs)],
        SEQS: [v for v in (base.seqs // 2, base.seqs * 2) if 1 <= v <= base.batched],
    }
    if base.fp8_kv_valid:
        values[KV_DTYPE] = [not base.fp8_kv]
    if base.offload_valid:
        values[OFFLOAD] = [not base.offload]
    return {k: v for k, v in values.items() if v}


def label(changes: dict[str, Any]) -> str:
    if not changes:
        return "baseline"
    parts = []
    for k, v in changes.items():
        parts.append(f"{'fp8-kv' if k == KV_DTYPE else 'offload'}-{'on' if v else 'off'}"
                     if isinstance(v, bool) else f"{k}={v}")
    return ",".join(parts)


def first_round(base: Baseline, limit: int = MAX_CANDIDATES) -> list[Candidate]:
    """The baseline and each knob moved alone, at most ``limit`` (one place is kept for round two)."""
    out = [Candidate("baseline")]
    for knob, values in knob_values(base).items():
        out += [Candidate(label({knob: v}), {knob: v}) for v in values]
    return out[:max(1, limit - 1)]


def second_round(results: dict[str, float | None], candidates: list[Candidate],
                 min_gain: float = MIN_GAIN) -> Candidate | None:
    """The combination of every knob's best single move that beat the baseline; None when fewer than two did."""
    base = results.get("baseline") or 0.0
    best: dict[str, tuple[float, Any]] = {}
    for c in candidates:
        cap = results.get(c.label)
        if len(c.changes) != 1 or cap is None or cap <= base * (1 + min_gain):
            continue
        (knob, value), = c.changes.items()
        if cap > best.get(knob, (0.0, None))[0]:
            best[knob] = (cap, value)
    if len(best) < 2:
        return None
    changes = {k: v for k, (_, v) in best.items()}
    if changes.get(BATCHED, 0) and changes.get(SEQS, 0) and changes[SEQS] > changes[BATCHED]:
        return None  # vLLM refuses max_num_seqs above max_num_batched_tokens
    return Candidate(label(changes), changes)


@dataclass(frozen=True)
class Verdict:
    winner: Candidate
    capacity: float
    baseline_capacity: float
    why: str


def choose_winner(results: dict[str, float | None], candidates: list[Candidate],
                  min_gain: float = MIN_GAIN) -> Verdict:
    """The highest capacity that beats the baseline by ``min_gain``; else the baseline (nothing to change)."""
    base = results.get("baseline")
    by_label = {c.label: c for c in candidates}
    measured = [(cap, -len(by_label[k].changes), k) for k, cap in results.items() if cap is not None and k in by_label]
    if base is None or not measured:
        return Verdict(by_label.get("baseline", Candidate("baseline")), 0.0, 0.0,
                       "no winner: the baseline has no capacity figure (it did not start or nothing passed the SLO)")
    cap, _, name = max(measured)
    if name == "baseline" or cap <= base * (1 + min_gain):
        return Verdict(by_label["baseline"], base, base,
                       f"the baseline stands: no candidate beat its {base:g} req/s by {min_gain:.0%} "
                       f"(best {name}: {cap:g} req/s)")
    return Verdict(by_label[name], cap, base, f"{name}: {cap:g} req/s within the SLO vs the baseline's {base:g} "
                   f"({cap / base:.2f}×)" if base else f"{name}: {cap:g} req/s; the baseline passed nothing")


def inventory_data(changes: dict[str, Any], extra_args: dict[str, Any], offload_gib: float | str | None) -> dict[str, Any]:
    """The spec keys that give a candidate's engine settings: what `pyinfra --data` and group_data take.
    ``extra_args`` and ``offload_gib`` are the node's own vllm_extra_args and vllm_kv_offload_gib."""
    data: dict[str, Any] = {}
    extra = dict(extra_args)
    for knob, value in changes.items():
        if knob == SEQS:
            data["vllm_max_num_seqs"] = value
        elif knob == BATCHED:
            extra[BATCHED] = value
        elif knob == KV_DTYPE:
            extra[KV_DTYPE] = "fp8" if value else "auto"
        elif knob == OFFLOAD:
            # On: the node's own size where it names one, else the planner's ("auto"); off: 0.
            data["vllm_kv_offload_gib"] = (offload_gib or "auto") if value else 0
    if extra != dict(extra_args):
        data["vllm_extra_args"] = extra
    return data


def group_data_text(host: str, data: dict[str, Any], verdict: Verdict, evidence: str) -> str:
    """A group_data (or host data) snippet: Python assignments the inventory takes as they are."""
    lines = [f"# r1deploy tune on {host}: {verdict.why}.", f"# Evidence: {evidence}",
             "# Merge into this host's group_data (or host data); the next converge renders it."]
    if not data:
        lines.append("# Nothing to change: the inventory as it is won.")
    lines += [f"{key} = {value!r}" for key, value in sorted(data.items())]
    return "\n".join(lines) + "\n"


def csv_rows(results: dict[str, dict], candidates: list[Candidate]) -> list[list[Any]]:
    """One row per candidate: its label, changes and capacity with the search's bracket."""
    rows: list[list[Any]] = [["candidate", "changes", "capacity_req_s", "bracket_low", "bracket_high", "error"]]
    for c in candidates:
        r = results.get(c.label, {})
        lo, hi = (r.get("bracket") or [None, None])
        rows.append([c.label, ";".join(f"{k}={v}" for k, v in c.changes.items()), r.get("capacity_req_s"), lo, hi,
                     r.get("error", "")])
    return rows
