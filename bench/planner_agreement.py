"""Print the planner's KV-cache prediction next to every size vLLM printed in a public log.

    .venv/bin/python bench/planner_agreement.py [--markdown]

Observations: tests/data/vllm_kv_observations.json (model, GPU, parallelism, max model len,
memory utilization, vLLM generation, source URL). The planner sees only that setup.
"""

from __future__ import annotations

import statistics
import sys

from r1deploy.agreement import Row, agreement


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


def main(argv: list[str]) -> int:
    rows = agreement()
    print(table(rows, markdown="--markdown" in argv))
    print()
    print(spread(rows))
    for r in rows:
        print(f"  {r.id}: {r.source}")
    return 0 if all(abs(r.error) <= 0.10 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
