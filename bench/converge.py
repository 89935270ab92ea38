"""Converge times on the lab: a fresh converge and a no-change converge, for N = 2 and N = 4 nodes.

    python bench/converge.py [--nodes 2 4]

Each size starts from fresh hosts (`lab down`, `lab up`), so the fresh converge includes
installing vLLM's CPU build from the wheelhouse and the first start of every server. Prints a
table with the ratio no-change / fresh, measured in the same run. Needs root; takes ~10 min per
size on 2 cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
PYINFRA = str(Path(PY).parent / "pyinfra")


def timed(*cmd: str) -> float:
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, nargs="+", default=[2, 4])
    args = p.parse_args()
    rows = []
    for n in args.nodes:
        timed(PY, "-m", "lab", "down")
        timed(PY, "-m", "lab", "up", "--nodes", str(n))
        fresh = timed(PYINFRA, "-y", "lab/inventories/lab.py", "deploy/main.py")
        again = timed(PYINFRA, "-y", "lab/inventories/lab.py", "deploy/main.py")
        rows.append((n, fresh, again))
    timed(PY, "-m", "lab", "down")
    print(f"{'nodes':>5} {'fresh converge s':>17} {'no-change s':>12} {'no-change/fresh':>16}")
    for n, fresh, again in rows:
        print(f"{n:>5} {fresh:>17.1f} {again:>12.1f} {again / fresh:>16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
