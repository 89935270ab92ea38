"""Rolling-update wall time on the lab vs the sum of the nodes' warm restarts, with failed requests.

    python bench/rollout.py [--nodes 2 3]     (root; brings the lab up with N nodes each time)

For each N: the lab converges, then a serving setting changes (`vllm_max_model_len`) and
changes back, each converge under the load loop of the lab tests (tests/loadloop.py, 4 req/s
through the gateway). Reported side by side from the same run: the converge's wall time, the
rollout's own time (every node's turn, from reports/rollout.json), the sum of the nodes' warm
restarts inside it (start + healthy phases: what restarting them one by one costs anyway),
their ratio, and what the users saw. Results: bench/results/rollout-<date>.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import labharness  # noqa: E402
from loadloop import LoadLoop  # noqa: E402


def one_change(lab: dict, data: list[str]) -> dict:
    reports = Path(tempfile.mkdtemp(prefix="r1-rollout-bench-"))
    loop = LoadLoop(labharness.gateway_url(lab), lab["model"]["repo_id"].split("/", 1)[1], rate=4.0,
                    **labharness.gateway_auth(lab)).start()
    t0 = time.monotonic()
    done = labharness.converge(*data, R1DEPLOY_REPORTS=str(reports))
    wall = time.monotonic() - t0
    seen = loop.stop()
    if done.returncode != 0:
        raise SystemExit(f"converge failed:\n{done.out[-4000:]}")
    nodes = json.loads((reports / "rollout.json").read_text())["nodes"]
    turns = sum(p["seconds"] for n in nodes for p in n["phases"])
    restarts = sum(p["seconds"] for n in nodes for p in n["phases"] if p["phase"] in ("start", "healthy"))
    return {"wall_s": wall, "rollout_s": turns, "restarts_s": restarts, "nodes": len(nodes),
            "sent": seen.sent, "failed": seen.failed, "truncated": seen.truncated}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[2, 3])
    p.add_argument("--no-back", action="store_true", help="only the change, not the change back (half the time)")
    args = p.parse_args()
    rows = []
    for n in args.nodes:
        lab = labharness.up(n)
        first = labharness.converge()
        if first.returncode != 0:
            raise SystemExit(first.out[-4000:])
        for data in (["--data", "vllm_max_model_len=1024"], *([] if args.no_back else [[]])):
            r = one_change(lab, data)
            rows.append((n, "max_model_len 2048->1024" if data else "back to 2048", r))
            print(n, rows[-1][1], r, flush=True)
    lines = [
        f"# Rolling update vs warm restarts (lab, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
        "Each converge changes one serving setting on every node, one node at a time, under a load loop "
        "of 4 req/s through the gateway (mixed chat/stream/completion, long streams, session headers).", "",
        "| nodes | change | converge wall s | rollout s | sum of warm restarts s | rollout / restarts | requests | failed | truncated |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, what, r in rows:
        lines.append(f"| {n} | {what} | {r['wall_s']:.0f} | {r['rollout_s']:.0f} | {r['restarts_s']:.0f} | "
                     f"{r['rollout_s'] / r['restarts_s']:.2f} | {r['sent']} | {r['failed']} | {r['truncated']} |")
    out = REPO / "bench" / "results" / f"rollout-{datetime.now(UTC):%Y%m%d-%H%M}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
