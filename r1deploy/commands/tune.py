"""`r1deploy tune`: a bounded sweep of engine settings on the operator's own hardware, kept by SLO capacity.

    r1deploy tune --inventory inventories/prod.py --limit gpu-h100-01 --base-url http://10.20.0.21:8000 \\
        --model DeepSeek-R1-Distill-Llama-70B --workload multi-turn --start-rate 4

Each candidate (r1deploy/observe/tune.py: the baseline, each knob moved alone, then the best moves
together) reaches the node through the converge itself (`pyinfra INV deploy/main.py --limit HOSTS
--data KEY=VALUE`: rendered, drained, restarted, warmed up, smoke-tested, back in rotation), then its SLO
capacity is searched as `r1deploy bench --capacity` does, against the node or through the gateway
(--base-url). At the end the hosts are converged back to the inventory as it is, unless --apply: then to
the winner. Writes under --out/<first host>: tune.json (every candidate, its capacity search and the
verdict), tune.csv, tune.png (with matplotlib) and <host>.group_data.py, the winner as inventory data.
Exit 0 with a result, 1 when nothing measured, 2 on bad input, 3 when the hosts could not be put back.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from r1deploy.observe import tune


def _nodes(inventory: str, limit: str) -> dict:
    """The limited hosts' specs: serving nodes of one model (a sweep measures one model's capacity)."""
    from r1deploy.fleet.inventory import load_specs

    specs = load_specs(inventory)
    names = [n.strip() for n in limit.split(",") if n.strip()]
    missing = [n for n in names if n not in specs or specs[n].fleet.role != "node"]
    if not names or missing:
        raise ValueError(f"--limit {limit!r}: not serving nodes of {inventory}: {', '.join(missing) or 'none named'}")
    chosen = {n: specs[n] for n in names}
    if len({s.model.repo_id for s in chosen.values()}) > 1:
        raise ValueError(f"--limit {limit!r}: the hosts serve different models; tune one model at a time")
    return chosen


def baseline_for(spec) -> tune.Baseline:
    """What the inventory renders on this node now (the capacity plan offline, as `r1deploy plan` shows it)."""
    from r1deploy.planner.catalog import find_gpu
    from r1deploy.planner.from_spec import spec_overrides
    from r1deploy.planner.offload import CONNECTOR_ARGS
    from r1deploy.serving.render import planned_engine

    args = planned_engine(spec).args or spec_overrides(spec)
    gpu = find_gpu(spec.plan.gpu or spec.gpu.expected_model or "") if spec.vllm.device != "cpu" else None
    defaults = tune.vllm_defaults(gpu.memory_mib / 1024 if gpu else 0, gpu.name if gpu else "cpu")
    return tune.baseline_of(args, spec.vllm.device, bool(gpu and gpu.fp8), defaults,
                            connector=any(k in spec.vllm.extra_args for k in CONNECTOR_ARGS))


def converge_argv(inventory: str, limit: str, data: dict[str, Any]) -> list[str]:
    """The converge of the limited hosts with a candidate's spec keys (pyinfra reads --data values as JSON)."""
    from r1deploy.paths import deploy_file

    argv = [sys.executable, "-m", "pyinfra", "-y", os.path.abspath(inventory), str(deploy_file("main")),
            "--limit", limit]
    for key, value in data.items():
        argv += ["--data", f"{key}={json.dumps(value)}"]
    return argv


def _converge(argv: list[str], log: Path) -> int:
    from r1deploy.paths import run_dir

    with open(log, "w") as out:
        return subprocess.run(argv, cwd=run_dir(), stdout=out, stderr=subprocess.STDOUT).returncode


def _measure(args: argparse.Namespace, out: Path) -> dict:
    from r1deploy.observe.capacity_cli import run

    try:
        return run(args, out)
    except OSError as exc:  # the node or gateway did not answer: a failed candidate, not a failed sweep
        return {"capacity_req_s": None, "bracket": [None, None], "error": f"{type(exc).__name__}: {exc}"}


def _try(cand: tune.Candidate, args, spec, out: Path, results: dict, log: list) -> None:
    data = tune.inventory_data(cand.changes, spec.vllm.extra_args, spec.vllm.kv_offload_gib)
    argv = converge_argv(args.inventory, args.limit, data)
    log.append({"candidate": cand.label, "converge": argv})
    print(f"tune: {cand.label}: converging {args.limit}", file=sys.stderr, flush=True)
    d = out / cand.label.replace("=", "-").replace(",", "+")
    d.mkdir(parents=True, exist_ok=True)
    rc = _converge(argv, d / "pyinfra.log")
    if rc != 0:
        results[cand.label] = {"capacity_req_s": None, "bracket": [None, None],
                               "error": f"converge exited {rc} (the rollout puts a failed node back): {d}/pyinfra.log"}
        return
    results[cand.label] = {**_measure(args, d), "data": data}
    print(f"tune: {cand.label}: {results[cand.label].get('capacity_req_s')} req/s", file=sys.stderr, flush=True)


def sweep(args: argparse.Namespace, spec, out: Path) -> tuple[list[tune.Candidate], dict, tune.Verdict, list]:
    """Round one, round two, the verdict; the hosts go back to the inventory (or the winner) whatever happens."""
    base = baseline_for(spec)
    candidates = tune.first_round(base, args.max_candidates)
    results: dict[str, dict] = {}
    log: list = []
    verdict = None
    try:
        for cand in candidates:
            _try(cand, args, spec, out, results, log)
        caps = {k: r.get("capacity_req_s") for k, r in results.items()}
        extra = tune.second_round(caps, candidates, args.min_gain)
        if extra and len(candidates) < args.max_candidates:
            candidates.append(extra)
            _try(extra, args, spec, out, results, log)
        verdict = tune.choose_winner({k: r.get("capacity_req_s") for k, r in results.items()}, candidates,
                                     args.min_gain)
    finally:
        keep = verdict.winner.changes if (verdict and args.apply) else {}
        data = tune.inventory_data(keep, spec.vllm.extra_args, spec.vllm.kv_offload_gib)
        argv = converge_argv(args.inventory, args.limit, data)
        log.append({"candidate": "restore" if not keep else "apply", "converge": argv})
        if _converge(argv, out / "restore.pyinfra.log") != 0:
            raise RestoreFailed(f"{args.limit} could not be converged back ({out / 'restore.pyinfra.log'}): "
                                f"run {' '.join(argv)}")
    return candidates, results, verdict, log


class RestoreFailed(Exception):
    pass


def write_evidence(out: Path, host: str, spec, candidates, results, verdict, log) -> list[Path]:
    data = tune.inventory_data(verdict.winner.changes, spec.vllm.extra_args, spec.vllm.kv_offload_gib)
    body = {"host": host, "candidates": [{"label": c.label, "changes": c.changes} for c in candidates],
            "results": results, "winner": verdict.winner.label, "capacity_req_s": verdict.capacity,
            "baseline_req_s": verdict.baseline_capacity, "why": verdict.why, "inventory_data": data, "commands": log}
    files = [out / "tune.json", out / "tune.csv", out / f"{host}.group_data.py"]
    files[0].write_text(json.dumps(body, indent=1, default=str))
    with open(files[1], "w", newline="") as f:
        csv.writer(f).writerows(tune.csv_rows(results, candidates))
    files[2].write_text(tune.group_data_text(host, data, verdict, str(files[0])))
    png = _plot(out / "tune.png", results, candidates)
    return files + ([png] if png else [])


def _plot(path: Path, results: dict, candidates: list[tune.Candidate]) -> Path | None:
    """Capacity per candidate with its search bracket; None without matplotlib (tune.csv has the figures)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels, caps, ups = [], [], []
    for c in candidates:  # the bar: the capacity; the whisker: up to the lowest failing rate
        r = results.get(c.label, {})
        cap = r.get("capacity_req_s") or 0
        labels.append(c.label)
        caps.append(cap)
        ups.append(((r.get("bracket") or [None, None])[1] or cap) - cap)
    fig, ax = plt.subplots(figsize=(max(6, len(labels) * 1.2), 4))
    ax.bar(labels, caps, yerr=[[0] * len(caps), ups], capsize=4)
    ax.set_ylabel("SLO capacity (req/s)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _cmd(args: argparse.Namespace) -> int:
    from r1deploy.fleet.inventory import InventoryFileError
    from r1deploy.spec import SpecError

    try:
        nodes = _nodes(args.inventory, args.limit)
    except (ValueError, OSError, InventoryFileError, SpecError) as exc:
        print(f"tune: {exc}", file=sys.stderr)
        return 2
    host, spec = next(iter(nodes.items()))
    args.slo_ttft_ms = args.slo_ttft_ms or spec.monitor.slo_ttft_p99_s * 1000
    args.slo_tpot_ms = args.slo_tpot_ms or spec.monitor.slo_tpot_p99_ms
    args.model = args.model or spec.model.name
    args.release = f"tune-{host}"
    if args.dry_run:
        return _dry_run(args, spec)
    out = Path(args.out) / host
    out.mkdir(parents=True, exist_ok=True)
    try:
        candidates, results, verdict, log = sweep(args, spec, out)
    except RestoreFailed as exc:
        print(f"tune: NOT RESTORED: {exc}", file=sys.stderr)
        return 3
    for path in write_evidence(out, host, spec, candidates, results, verdict, log):
        print(f"tune: wrote {path}")
    print(f"tune: {verdict.why}" + ("; applied" if args.apply and verdict.winner.changes else
                                     "; the hosts run the inventory as it is"))
    return 0 if verdict.capacity else 1


def _dry_run(args: argparse.Namespace, spec) -> int:
    """The candidates and the converges they would run; nothing is touched."""
    base = baseline_for(spec)
    print(f"baseline: max-num-batched-tokens {base.batched}, max-num-seqs {base.seqs}, fp8 KV "
          f"{'on' if base.fp8_kv else 'off'}{'' if base.fp8_kv_valid else ' (not valid here)'}, KV offload "
          f"{'on' if base.offload else 'off'}{'' if base.offload_valid else ' (not valid here)'}"
          + (f"; vLLM's default assumed for {', '.join(base.assumed)}" if base.assumed else ""))
    for cand in tune.first_round(base, args.max_candidates):
        data = tune.inventory_data(cand.changes, spec.vllm.extra_args, spec.vllm.kv_offload_gib)
        print(f"{cand.label}: pyinfra {shlex.join(converge_argv(args.inventory, args.limit, data)[3:])}")
    print("then: the best moves together (when two knobs gained), and the hosts converged back "
          + ("to the winner (--apply)" if args.apply else "to the inventory"))
    return 0


def register(sub) -> None:
    p = sub.add_parser("tune", help="bounded sweep of engine settings on a node (or through its gateway): the best "
                       "SLO capacity, written as inventory data; the node is put back unless --apply",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inventory", required=True)
    p.add_argument("--limit", required=True, help="the node(s) to tune, comma-separated (all of one model: with "
                   "a gateway --base-url, every node behind it)")
    p.add_argument("--base-url", required=True, help="where to measure: the node, or the gateway in front of --limit")
    p.add_argument("--model", help="served model name (default: the spec's)")
    p.add_argument("--served-name", help="if --model is a path: the name to send instead")
    p.add_argument("--api-key-file", help="the node's or gateway's API key file (never argv)")
    p.add_argument("--ca-file", help="CA bundle for an https --base-url")
    p.add_argument("--apply", action="store_true", help="leave the hosts on the winner (else: back to the inventory)")
    p.add_argument("--dry-run", action="store_true", help="print the baseline, candidates and converges; touch nothing")
    p.add_argument("--max-candidates", type=int, default=tune.MAX_CANDIDATES)
    p.add_argument("--min-gain", type=float, default=tune.MIN_GAIN, help="a winner beats the baseline by this share")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--input-len", type=int, default=1024)
    p.add_argument("--output-len", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slo-ttft-ms", type=float, help="default: monitor_slo_ttft_p99_s")
    p.add_argument("--slo-tpot-ms", type=float, help="default: monitor_slo_tpot_p99_ms")
    p.add_argument("--out", default="reports/tune")
    from r1deploy.observe.capacity_cli import add_args

    add_args(p)
    p.set_defaults(func=_cmd)
