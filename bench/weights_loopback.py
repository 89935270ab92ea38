"""Weights path on loopback: the mirror and the host agent next to huggingface-hub's own download.

    .venv/bin/python bench/weights_loopback.py [--hidden 1024 --layers 8 --intermediate 4096]

Builds a bigger tiny model (~256 MiB by default), publishes it to a temporary mirror on
127.0.0.1 and measures, each in a fresh process: huggingface-hub's snapshot_download, the
agent's fresh pull (hash-verified, fsynced), its no-op pull, a pull resumed after a kill
mid-shard (bytes the mirror sent in both runs, from its access log), and a full re-verify.
Bounded: one model, a handful of pulls; everything lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
sys.path.insert(0, str(REPO / "lab"))

import tinymodel  # noqa: E402

from r1deploy.mirror import publish  # noqa: E402

REPO_ID = "bench/tiny-r1-big"


def env(endpoint: str, home: Path) -> dict[str, str]:
    return dict(os.environ, HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
                HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_PROGRESS_BARS="1")


def timed(cmd: list[str], e: dict[str, str]) -> tuple[float, str]:
    t0 = time.monotonic()
    out = subprocess.run(cmd, env=e, cwd=REPO, check=True, capture_output=True, text=True).stdout
    return time.monotonic() - t0, out


def file_bytes(log: Path, name: str) -> list[int]:
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return [r["bytes"] for r in rows if r["method"] == "GET" and r["path"].endswith("/" + name)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--intermediate", type=int, default=4096)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="r1bench-") as tmp:
        t = Path(tmp)
        model = tinymodel.build(t / "model", layers=args.layers, hidden=args.hidden,
                                intermediate=args.intermediate, shards=4)
        commit = publish(model, t / "mirror", REPO_ID)
        size = sum(f.stat().st_size for f in model.iterdir())
        shard = max(model.glob("*.safetensors"), key=lambda f: f.stat().st_size).name
        shard_size = (model / shard).stat().st_size
        log = t / "access.jsonl"
        server = subprocess.Popen([PY, "-m", "r1deploy.mirror", "serve", "--root", str(t / "mirror"), "--port", "0",
                                   "--log", str(log)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        url = server.stdout.readline().split()[-1]
        e = env(url, t / "hf")
        agent = [PY, "-m", "r1deploy.weights"]
        pull = [*agent, "pull", "--repo", REPO_ID, "--revision", commit, "--endpoint", url, "--margin-gib", "0"]
        rows = []
        try:
            snap = ("import sys; from huggingface_hub import snapshot_download; "
                    "snapshot_download(sys.argv[1], revision=sys.argv[2], local_dir=sys.argv[3])")
            rows.append(("huggingface-hub snapshot_download", *timed([PY, "-c", snap, REPO_ID, commit,
                                                                      str(t / "hub")], e)[:1], size))
            rows.append(("agent pull, fresh (verified)", timed([*pull, "--root", str(t / "a")], e)[0], size))
            rows.append(("agent pull, no-op", timed([*pull, "--root", str(t / "a")], e)[0], 0))
            local = t / "a" / REPO_ID.replace("/", "--") / commit
            rows.append(("agent verify --full", timed([*agent, "verify", "--dir", str(local), "--full"], e)[0], 0))
            killed = subprocess.Popen([*pull, "--root", str(t / "b"), "--workers", "1"], env=e, cwd=REPO,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            part = t / "b" / REPO_ID.replace("/", "--") / commit / (shard + ".part")
            deadline = time.monotonic() + 120
            while (not part.exists() or part.stat().st_size < shard_size // 2) \
                    and time.monotonic() < deadline and killed.poll() is None:
                time.sleep(0.01)
            killed.send_signal(signal.SIGKILL)
            killed.wait()
            rows.append(("agent pull, resumed after kill", timed([*pull, "--root", str(t / "b")], e)[0], None))
            sent = file_bytes(log, shard)[-2:]
        finally:
            server.terminate()
            server.wait()
    mib = 2**20
    print(f"model: {size / mib:.0f} MiB; the killed shard {shard} is {shard_size / mib:.1f} MiB")
    print(f"{'step':38} {'seconds':>8} {'MiB/s':>8}")
    for name, secs, nbytes in rows:
        rate = f"{nbytes / mib / secs:8.0f}" if nbytes else f"{'':8}"
        print(f"{name:38} {secs:8.2f} {rate}")
    print(f"mirror bytes for that shard: killed pull {sent[0]}, resumed pull {sent[1]}, "
          f"sum {sum(sent) / shard_size:.2f}x the shard (a restart from zero: >1x plus the first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
