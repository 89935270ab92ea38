"""Drift-check time on the lab for the tiny model and for a model directory 100x larger.

    python bench/drift_time.py [--factor 100] [--repeat 5]

On every node of the lab that is up, copies the published tiny model twice under
/srv/bench-drift/{tiny,big}/ (the big copy: every file extended to FACTOR x its size, sparse)
with a manifest that matches each copy, then times `r1deploy drift-run --limit nodes --data
model_root=/srv/bench-drift/<copy>` (the whole check, as an operator runs it) and the weights
check alone on the host (the agent's `status`: size + mtime per file). Same file count, FACTOR x
the bytes: the cheap check should take the same time within noise (O(files), not O(bytes)); a
`--full` rehash is shown for contrast (O(bytes) by design). Both copies render a different
model path than the converged spec, so the runs report drift: only their time is compared.
Removes /srv/bench-drift afterwards. Needs root and a converged lab (`make lab`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
R1 = str(Path(sys.executable).parent / "r1deploy")
BENCH_ROOT = "/srv/bench-drift"

PREPARE = r"""
import glob, json, os, shutil, sys
factor = int(sys.argv[1])
src = os.path.realpath(glob.glob("/srv/models/*/current")[0])
commit, repo_dir = os.path.basename(src), os.path.basename(os.path.dirname(src))
shutil.rmtree("@ROOT@", ignore_errors=True)
for variant, grow in (("tiny", 1), ("big", factor)):
    base = f"@ROOT@/{variant}/{repo_dir}"
    os.makedirs(f"{base}/{commit}")
    manifest = json.load(open(f"{src}/.r1deploy-manifest.json"))
    for e in manifest["files"]:
        dst = f"{base}/{commit}/{e['path']}"
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(f"{src}/{e['path']}", dst)
        os.truncate(dst, e["size"] * grow)  # the tail is a hole: sparse, no disk used
        st = os.stat(dst)
        e["size"], e["mtime_ns"] = st.st_size, st.st_mtime_ns
    json.dump(manifest, open(f"{base}/{commit}/.r1deploy-manifest.json", "w"))
    os.symlink(commit, f"{base}/current")
    print(variant, len(manifest["files"]), sum(e["size"] for e in manifest["files"]))
""".replace("@ROOT@", BENCH_ROOT)


def ssh(lab: dict, ip: str, command: str) -> str:
    return subprocess.run(["ssh", "-i", lab["ssh_key"], "-o", "BatchMode=yes", "-o",
                           f"UserKnownHostsFile={lab['known_hosts']}", "-o", "StrictHostKeyChecking=accept-new",
                           f"root@{ip}", command], capture_output=True, text=True, timeout=600, check=True).stdout


def timed(fn) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def drift_run(variant: str, reports: str, full: bool = False) -> None:
    cmd = [R1, "drift-run", "lab/inventories/lab.py", "--limit", "nodes", "--reports", reports,
           "--data", f"model_root={BENCH_ROOT}/{variant}", *(["--full"] if full else [])]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    if done.returncode not in (0, 1):  # 1: the bench copy's model path differs from the spec: expected
        raise SystemExit(f"drift-run {variant} exited {done.returncode}:\n{done.stdout}{done.stderr}")


def main() -> int:
    from lab.state import lab_info

    p = argparse.ArgumentParser()
    p.add_argument("--factor", type=int, default=100)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    lab = lab_info()
    nodes = [h for h in lab["hosts"] if h["role"] == "node"]
    repo = lab["model"]["repo_id"]
    sizes = {}
    for node in nodes:
        for line in ssh(lab, node["ip"], f"python3 - {args.factor} <<'EOF'\n{PREPARE}\nEOF").split("\n"):
            if line:
                variant, count, size = line.split()
                sizes[variant] = (int(count), int(size))
    agent = ("PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/opt/r1deploy/agent/src /opt/r1deploy/agent/bin/python "
             "-m r1deploy.weights")
    rows = []
    try:
        with tempfile.TemporaryDirectory() as reports:
            for variant in ("tiny", "big"):
                status = f"{agent} status --root {BENCH_ROOT}/{variant} --repo {repo} >/dev/null"
                # The host-side number: N status calls in one SSH session, per call.
                loop = f"t0=$(date +%s%N); for i in $(seq 20); do {status}; done; echo $(( ($(date +%s%N)-t0)/20000 ))"
                host_us = [int(ssh(lab, nodes[0]["ip"], loop)) for _ in range(args.repeat)]
                runs = [timed(lambda v=variant: drift_run(v, reports)) for _ in range(args.repeat)]
                full = timed(lambda v=variant: drift_run(v, reports, full=True))
                rows.append((variant, *sizes[variant], statistics.median(host_us) / 1000,
                             statistics.median(runs), min(runs), max(runs), full))
    finally:
        for node in nodes:
            ssh(lab, node["ip"], f"rm -rf {BENCH_ROOT}")
    print(f"drift check, {len(nodes)} node(s), median of {args.repeat}; sparse copy x{args.factor}")
    print(f"{'model':6} {'files':>5} {'bytes':>12} {'status ms':>9} {'drift-run s':>11} {'min':>6} {'max':>6} "
          f"{'--full s':>8}")
    for variant, count, size, status_ms, med, lo, hi, full in rows:
        print(f"{variant:6} {count:5d} {size:12d} {status_ms:9.1f} {med:11.2f} {lo:6.2f} {hi:6.2f} {full:8.2f}")
    (tiny, big) = rows
    print(f"big/tiny: status {big[3] / tiny[3]:.2f}, drift-run {big[4] / tiny[4]:.2f}, --full {big[7] / tiny[7]:.2f}")
    print(json.dumps({"factor": args.factor, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
