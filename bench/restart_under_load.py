"""A node's vLLM restart-to-healthy on the lab, idle vs beside two nodes serving the load loop.

    R1LAB_NAME=... python bench/restart_under_load.py [--repeats 3] [--env-variant old new]

Needs a 3-node lab that is up and converged (`python -m lab up --nodes 3`, then deploy/main.py).
For each variant of the lab's engine env (`old`: vLLM's default multiprocess engine, whose worker
spins on its queue; `new`: the lab's VLLM_ENABLE_V1_MULTIPROCESSING=0), the fleet converges to it,
then node3 is taken out of the router's rotation and its unit restarted `--repeats` times idle and
`--repeats` times while tests/loadloop.py sends 4 req/s through the edge to the other two; each
time from `systemctl restart` to /health 200. node3 goes back into rotation after each variant.
The fleet is left on the lab inventory's env. Prints a table; bounded (each restart <= 900 s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import labharness as L  # noqa: E402
from loadloop import LoadLoop  # noqa: E402

VARIANTS = {"old": {"OMP_NUM_THREADS": "1"},
            "new": {"OMP_NUM_THREADS": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}}
NODE = "node3"


def _admin(lab: dict, op: str, url: str) -> None:
    L.ssh(lab, "gateway", f"curl -fsS -m 30 -X POST 'http://127.0.0.1:{L.ROUTER_PORT}/{op}?url={url}'")


def restart_to_healthy(lab: dict, url: str) -> float:
    L.ssh(lab, NODE, "systemctl restart r1-vllm")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 900:
        code = L.ssh(lab, NODE, f"curl -s -o /dev/null -w '%{{http_code}}' -m 2 {url}/health").stdout.strip()
        if code == "200":
            return time.monotonic() - t0
        time.sleep(1)
    raise SystemExit(f"{NODE} not healthy within 900 s")


def one_variant(lab: dict, env: dict, repeats: int) -> dict:
    done = L.converge("--data", f"vllm_env={json.dumps(env)}")
    if done.returncode:
        raise SystemExit(done.out[-3000:])
    url = f"http://{L.host_ip(lab, NODE)}:8000"
    _admin(lab, "remove_worker", url)
    try:
        idle = [restart_to_healthy(lab, url) for _ in range(repeats)]
        load = LoadLoop(L.gateway_url(lab), L.lab_model(lab), rate=L.RATE, max_seconds=900 * repeats,
                        **L.gateway_auth(lab)).start()
        time.sleep(10)
        loaded = [restart_to_healthy(lab, url) for _ in range(repeats)]
        seen = load.stop()
    finally:
        _admin(lab, "add_worker", url)
    return {"idle_s": idle, "load_s": loaded, "users": seen.summary()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--env-variant", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()
    from lab.state import lab_info

    lab = lab_info()  # the lab that is up (R1LAB_NAME), as `lab up` wrote it
    rows = {v: one_variant(lab, VARIANTS[v], args.repeats) for v in args.env_variant}
    L.converge()  # back to the inventory's env
    print("| variant | idle restart s (median, min-max) | under load s (median, min-max) | load/idle | users |")
    print("| --- | --- | --- | --- | --- |")
    for v, r in rows.items():
        i, ld = r["idle_s"], r["load_s"]
        print(f"| {v} | {statistics.median(i):.1f} ({min(i):.1f}-{max(i):.1f}) | "
              f"{statistics.median(ld):.1f} ({min(ld):.1f}-{max(ld):.1f}) | "
              f"{statistics.median(ld) / statistics.median(i):.2f} | {r['users']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
