"""Print the planner's KV-cache prediction next to every size vLLM printed in a public log,
then next to vLLM 0.26.0's own lines on a real H200.

    .venv/bin/python bench/planner_agreement.py [--markdown]

Public logs: tests/data/vllm_kv_observations.json (model, GPU, parallelism, max model len,
memory utilization, vLLM generation, source URL); the planner sees only that setup; target
±10 %. H200: tests/data/h200_vllm_observations.json, planned from the spec the H200 node's
rendered config came from (bench/h200/h200_node.py), as tests/test_h200_agreement.py does;
target ±5 % on weights, KV GiB and KV tokens. Exit status 1 when either target is missed.
"""

from __future__ import annotations

import json
import os
import runpy
import statistics
import sys
from pathlib import Path

from r1deploy.planner.agreement import Row, agreement

ROOT = Path(__file__).resolve().parents[1]
H200_DATA = ROOT / "tests" / "data" / "h200_vllm_observations.json"
H200_NODE = ROOT / "bench" / "h200" / "h200_node.py"
H200_METRICS = (("weights", "weights_gib", "weights_gib_per_gpu"), ("KV GiB", "kv_cache_gib", "kv_cache_gib_per_gpu"),
                ("KV tokens", "kv_cache_tokens", "kv_cache_tokens"))


def _fmt(row: Row, value: float) -> str:
    return f"{value:,.0f} tok" if row.metric == "tokens" else f"{value:.2f} GiB"


def table(rows: list[Row], markdown: bool = False) -> str:
    head = ["observation", "model", "GPU", "layout", "max len", "util", "vLLM", "observed", "planner", "error"]
    body = [[r.id, r.model.removeprefix("DeepSeek-"), r.gpu, r.layout, f"{r.max_model_len:,}", f"{r.utilization:g}",
             r.engine, _fmt(r, r.observed), _fmt(r, r.predicted), f"{r.error * 100:+.1f}%"] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in [head, *body])


def spread(rows: list[Row]) -> str:
    errors = [r.error * 100 for r in rows]
    inside = sum(abs(e) <= 10 for e in errors)
    return (f"{len(rows)} observations: error min {min(errors):+.1f}%, max {max(errors):+.1f}%, "
            f"mean {statistics.mean(errors):+.1f}%, mean |error| {statistics.mean(map(abs, errors)):.1f}%; "
            f"{inside}/{len(rows)} within ±10%")


def h200_plan(obs: dict):
    """The plan for one H200 run, from the same inventory and GPU facts the run used."""
    from r1deploy.planner import plan_for_spec
    from r1deploy.spec import spec_from_host_data

    env = {"R1_H200_MODEL": obs["repo_id"], "R1_H200_GPU_UTIL": str(obs["gpu_memory_utilization"]),
           "R1_H200_MAX_MODEL_LEN": str(obs["max_model_len"])}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        data = runpy.run_path(str(H200_NODE))["h200"][0][1]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return plan_for_spec(spec_from_host_data("@local", data), gpu_name=obs["gpu"],
                         gpu_count=obs["gpus_per_node"], gpu_memory_mib=obs["gpu_memory_mib"])


def h200_table(markdown: bool = False) -> tuple[str, list[float]]:
    """vLLM's lines vs the plan per H200 run; the reserves side by side (torch peak vs activations)."""
    observations = json.loads(H200_DATA.read_text())["observations"]
    head = ["run", "util", "max len", "weights GiB vLLM / plan", "torch peak / plan act.", "non-torch",
            "KV GiB vLLM / plan", "KV tokens vLLM / plan"]
    body, errors = [], []
    for obs in observations:
        p, seen = h200_plan(obs), obs["observed"]
        cells = []
        for _, key, attr in H200_METRICS:
            predicted, observed = float(getattr(p, attr)), float(seen[key])
            error = (predicted - observed) / observed
            errors.append(error)
            fmt = "{:,.0f}" if key == "kv_cache_tokens" else "{:.2f}"
            cells.append(f"{fmt.format(observed)} / {fmt.format(predicted)} ({error * 100:+.1f}%)")
        body.append([obs["id"].removeprefix("h200-"), f"{obs['gpu_memory_utilization']:g}", f"{obs['max_model_len']:,}",
                     cells[0], f"{seen['torch_peak_increase_gib']:.2f} / {p.activation_gib:.2f}",
                     f"{seen['non_torch_gib']:.2f} / {p.non_torch_gib:.2f}", cells[1], cells[2]])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body]), errors
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    text = "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
                     for row in [head, *body])
    return text, errors


def h200_spread(errors: list[float]) -> str:
    lines = []
    for i, (name, _, _) in enumerate(H200_METRICS):
        e = [x * 100 for x in errors[i::len(H200_METRICS)]]
        lines.append(f"{name}: error min {min(e):+.1f}%, max {max(e):+.1f}%, mean |error| "
                     f"{statistics.mean(map(abs, e)):.1f}%; {sum(abs(x) <= 5 for x in e)}/{len(e)} within ±5%")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    markdown = "--markdown" in argv
    rows = agreement()
    print("Public vLLM logs (target ±10 %)")
    print(table(rows, markdown=markdown))
    print()
    print(spread(rows))
    for r in rows:
        print(f"  {r.id}: {r.source}")
    print()
    print("vLLM 0.26.0 on a real H200 (tests/data/h200_vllm_observations.json; target ±5 %)")
    text, errors = h200_table(markdown=markdown)
    print(text)
    print()
    print(h200_spread(errors))
    public_ok = all(abs(r.error) <= 0.10 for r in rows)
    h200_ok = all(abs(e) <= 0.05 for e in errors)
    return 0 if public_ok and h200_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
