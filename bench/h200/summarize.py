"""Tables (and a plot, where matplotlib is installed) from the H200 results.

    python bench/h200/summarize.py bench RESULT_DIR     # vllm bench serve JSONs: <label>-c<N>.json
    python bench/h200/summarize.py agree OBSERVATIONS   # agree.py's observations.json

Prints Markdown; `bench` also writes RESULT_DIR/throughput.png when matplotlib imports.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def bench_rows(result_dir: Path) -> list[dict]:
    rows = []
    for f in sorted(result_dir.glob("*-c*.json")):
        m = re.match(r"(.+)-c(\d+)\.json$", f.name)
        if not m:
            continue
        d = json.loads(f.read_text())
        rows.append({
            "config": m.group(1), "concurrency": int(m.group(2)), "prompts": d.get("num_prompts"),
            "completed": d.get("completed"), "duration_s": d.get("duration"),
            "output_tok_s": d.get("output_throughput"), "total_tok_s": d.get("total_token_throughput"),
            "req_s": d.get("request_throughput"), "mean_ttft_ms": d.get("mean_ttft_ms"),
            "p99_ttft_ms": d.get("p99_ttft_ms"), "mean_tpot_ms": d.get("mean_tpot_ms"),
            "p99_tpot_ms": d.get("p99_tpot_ms"), "input_tokens": d.get("total_input_tokens"),
            "output_tokens": d.get("total_output_tokens"),
        })
    rows.sort(key=lambda r: (r["concurrency"], r["config"]))
    return rows


def fmt(v, nd=1):
    if v is None:
        return "–"
    return f"{v:,.{nd}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def bench_table(rows: list[dict]) -> str:
    head = ("| concurrency | config | prompts (done) | output tok/s | total tok/s | req/s | mean TTFT ms | "
            "p99 TTFT ms | mean TPOT ms | p99 TPOT ms |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['concurrency']} | {r['config']} | {r['prompts']} ({r['completed']}) | "
                     f"{fmt(r['output_tok_s'], 0)} | {fmt(r['total_tok_s'], 0)} | {fmt(r['req_s'], 2)} | "
                     f"{fmt(r['mean_ttft_ms'])} | {fmt(r['p99_ttft_ms'])} | {fmt(r['mean_tpot_ms'], 2)} | "
                     f"{fmt(r['p99_tpot_ms'], 2)} |")
    return "\n".join(lines)


def bench_plot(rows: list[dict], out: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for config in sorted({r["config"] for r in rows}):
        pts = [r for r in rows if r["config"] == config and r["output_tok_s"]]
        xs = [r["concurrency"] for r in pts]
        axes[0].plot(xs, [r["output_tok_s"] for r in pts], marker="o", label=config)
        axes[1].plot(xs, [r["mean_tpot_ms"] for r in pts], marker="o", label=config)
    for ax, title in zip(axes, ["output tokens/s", "mean TPOT (ms)"], strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("vLLM 0.26.0 on 1x H200, R1-Distill-Qwen-7B shape (random weights), 1024 in / 256 out")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return True


def pct(obs, pred):
    if obs in (None, 0) or pred is None:
        return None
    return 100.0 * (pred - obs) / obs


def agree_table(records: list[dict]) -> str:
    lines = ["| model | util | max len | weights GiB vLLM / plan (err) | KV GiB vLLM / plan (err) | "
             "KV tokens vLLM / plan (err) | max conc. vLLM / plan |", "|" + "---|" * 7]
    for r in records:
        if r.get("status") != "ok":
            lines.append(f"| {r['model'].split('/')[-1]} | {r['gpu_memory_utilization']} | {r['max_model_len']} | "
                         f"{r.get('status')} | | | |")
            continue
        o, p = r["observed"], r["predicted"]
        cells = []
        for ok, pk, nd in (("weights_gib", "weights_gib_per_gpu", 2), ("kv_cache_gib", "kv_cache_gib_per_gpu", 2),
                           ("kv_cache_tokens", "kv_cache_tokens", 0)):
            e = pct(o.get(ok), p.get(pk))
            cells.append(f"{fmt(o.get(ok), nd) if nd else fmt(o.get(ok))} / "
                         f"{fmt(float(p[pk]), nd) if nd else fmt(int(p[pk]))} ({'–' if e is None else f'{e:+.1f} %'})")
        lines.append(f"| {r['model'].split('/')[-1]} | {r['gpu_memory_utilization']} | {r['max_model_len']} | "
                     + " | ".join(cells) + f" | {fmt(o.get('max_concurrency'), 2)} / {fmt(p.get('max_concurrency'), 2)} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    kind, path = argv[1], Path(argv[2])
    if kind == "bench":
        rows = bench_rows(path)
        print(bench_table(rows))
        (path / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
        if bench_plot(rows, path / "throughput.png"):
            print(f"\nplot: {path / 'throughput.png'}")
    else:
        print(agree_table(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
