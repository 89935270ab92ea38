"""Fan-out benchmark: one upstream pull vs every node from upstream vs a seed serving the LAN.

    R1LAB_NAME=r1fan R1LAB_NET=10.80.0 python bench/fanout.py [--nodes 2 4 8] [--mib 96]
        [--lan-mbit 320] [--ratio 10]

On the lab (brought up once with the largest N; each N uses its first N nodes), with tc shaping every host's link to the LAN rate (both
directions: the veth in the bridge and eth0 in the host) and the upstream hub (the lab's Hub
mirror on the bridge, shared by all hosts like a site's internet link) to 1/ratio of it. A
bigger random model (lab/tinymodel.py knobs) makes the transfer dominate. Only the weights stage
runs (bench/fanout_deploy.py, no vLLM; the agent is installed before shaping). For each N, in
one run, timed as the wall time of the pyinfra weights run after the nodes' model directories
were wiped:

  one upstream pull   node1 alone pulls from upstream
  naive               all N nodes pull from upstream at once
  fan-out             model_seed_nodes=["node1"]: node1 pulls from upstream and serves the LAN
                      (r1-mirror.service), then the other N-1 pull from it
  pipelined           the same with model_seed_mode="pipelined": the other nodes pull at the same
                      time, each file as soon as the seed has verified it

and reports each over "one". Every pull uses `--workers` parallel files (default 1: the seed
finishes shards one by one, so the pipelined nodes can follow it shard by shard). Writes
bench/results/fanout-<date>.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab import labctl  # noqa: E402
from lab.state import STATE  # noqa: E402

PY = sys.executable
PYINFRA = str(Path(PY).parent / "pyinfra")
MODEL_ROOT = "/srv/models"


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def build_model(mib: int) -> dict:
    """A random Qwen2-shaped model of about `mib` MiB in ~8 shards, published to the lab's hub root."""
    from r1deploy.mirror import publish

    hidden, inter = 1024, 2816
    per_layer = 2 * hidden * hidden + 2 * hidden * hidden // 2 + 3 * hidden * inter
    layers = max(1, round((mib * 2**20 / 2 - 2 * 4096 * hidden) / per_layer))
    src = labctl.CACHE / f"bench-model-{mib}mib"
    if not (src / "config.json").exists():
        sh([PY, str(REPO / "lab" / "tinymodel.py"), str(src), "--hidden", str(hidden), "--intermediate",
            str(inter), "--layers", str(layers), "--shards", "8"])
    repo_id = f"r1bench/fanout-{mib}mib"
    commit = publish(src, labctl.CACHE / "hub", repo_id)
    size = sum(f.stat().st_size for f in src.iterdir() if f.is_file())
    return {"repo_id": repo_id, "revision": commit, "bytes": size,
            "shards": len(list(src.glob("*.safetensors")))}


# --------------------------------------------------------------------------- shaping

def tc(*args: str, ns: str | None = None) -> None:
    cmd = ["tc", *args] if ns is None else ["ip", "netns", "exec", ns, "tc", *args]
    subprocess.run(cmd, check=True)


def _htb(dev: str, mbit: float, ns: str | None = None) -> None:
    tc("qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "10", ns=ns)
    tc("class", "replace", "dev", dev, "parent", "1:", "classid", "1:10", "htb", "rate", f"{mbit}mbit",
       "ceil", f"{mbit}mbit", "burst", "256k", "cburst", "256k", ns=ns)


def shape(nodes: list[str], lan_mbit: float, up_mbit: float) -> None:
    """Each host's link at the LAN rate both ways; the hub's replies (port 8701) at the upstream rate."""
    for name in nodes:
        _htb(labctl._veth(name), lan_mbit)  # bridge -> host: the host's download
        _htb("eth0", lan_mbit, ns=labctl._netns(name))  # host -> bridge: the host's upload
    br = labctl.BRIDGE
    tc("qdisc", "replace", "dev", br, "root", "handle", "1:", "htb", "default", "20")
    tc("class", "replace", "dev", br, "parent", "1:", "classid", "1:10", "htb", "rate", f"{up_mbit}mbit",
       "ceil", f"{up_mbit}mbit", "burst", "64k", "cburst", "64k")
    tc("class", "replace", "dev", br, "parent", "1:", "classid", "1:20", "htb", "rate", "10gbit")
    tc("filter", "replace", "dev", br, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
       "match", "ip", "sport", str(labctl.HUB_PORT), "0xffff", "flowid", "1:10")


def unshape(nodes: list[str]) -> None:
    for name in nodes:
        subprocess.run(["tc", "qdisc", "del", "dev", labctl._veth(name), "root"], capture_output=True)
        subprocess.run(["ip", "netns", "exec", labctl._netns(name), "tc", "qdisc", "del", "dev", "eth0", "root"],
                       capture_output=True)
    subprocess.run(["tc", "qdisc", "del", "dev", labctl.BRIDGE, "root"], capture_output=True)


# --------------------------------------------------------------------------- runs

def pyinfra(stage: str, data: dict, limit: list[str]) -> tuple[float, str]:
    argv = [PYINFRA, "-y", "lab/inventories/lab.py", "bench/fanout_deploy.py"]
    for name in limit:
        argv += ["--limit", name]
    for k, v in data.items():
        argv += ["--data", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    env = {**os.environ, "R1BENCH_STAGE": stage, "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    r = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    took = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"pyinfra {stage} failed ({shlex.join(argv)}):\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}")
    return took, r.stdout


def on_nodes(ips: list[str], command: str) -> list[str]:
    procs = [subprocess.Popen(["ssh", "-i", str(labctl.ssh_key()), "-o", "BatchMode=yes", "-o",
                               f"UserKnownHostsFile={STATE / 'known_hosts'}", "-o", "StrictHostKeyChecking=accept-new",
                               f"root@{ip}", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for ip in ips]
    return [p.communicate(timeout=120)[0] for p in procs]


def wipe(ips: list[str]) -> None:
    on_nodes(ips, f"systemctl stop r1-mirror.service 2>/dev/null; rm -rf {MODEL_ROOT}/r1bench--* {MODEL_ROOT}/.mirror; true")


def check(ips: list[str], model: dict) -> None:
    base = f"{MODEL_ROOT}/{model['repo_id'].replace('/', '--')}"
    out = on_nodes(ips, f"readlink {base}/current")
    bad = [ip for ip, o in zip(ips, out, strict=True) if o.strip() != model["revision"]]
    if bad:
        raise SystemExit(f"nodes without the model after the run: {bad}")


def seed_token_file() -> Path:
    """The bench fleet's seed token (the seeds' mirror requires one), made once beside the lab's state."""
    path = STATE / "bench-seed-token"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32) + "\n")
    return path


def bench_n(n: int, nodes: list[dict], model: dict, workers: int) -> dict:
    """The three ways for the first n nodes of the (shaped, agent-ready) lab."""
    names, ips = [h["name"] for h in nodes[:n]], [h["ip"] for h in nodes[:n]]
    data = {"model_repo_id": model["repo_id"], "model_revision": model["revision"], "model_disk_margin_gib": 0,
            "model_pull_workers": workers}
    seed = {"model_seed_nodes": [names[0]], "model_seed_token_file": str(seed_token_file())}
    times = {}
    for mode, limit, extra in [("one", names[:1], {}), ("naive", names, {}), ("fanout", names, seed),
                               ("pipelined", names, {**seed, "model_seed_mode": "pipelined"})]:
        wipe(ips)
        took, _ = pyinfra("weights", {**data, **extra}, limit)
        check(ips[:len(limit)], model)
        times[mode] = took
        print(f"N={n} {mode}: {took:.1f}s", file=sys.stderr, flush=True)
    wipe(ips)
    return {"nodes": n, **{f"{k}_s": round(v, 1) for k, v in times.items()},
            **{f"{k}_over_one": round(times[k] / times["one"], 2) for k in ("naive", "fanout", "pipelined")}}


def table(rows: list[dict], model: dict, lan_mbit: float, up_mbit: float, workers: int) -> str:
    lines = [f"Fan-out benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, lab {labctl.LAB}",
             f"model {model['repo_id']} ({model['bytes'] / 2**20:.0f} MiB, {model['shards']} shards); each host link "
             f"{lan_mbit:g} Mbit/s both ways, upstream hub {up_mbit:g} Mbit/s shared by all hosts (1/{lan_mbit / up_mbit:g} "
             f"of the LAN); {workers} file(s) at a time per pull; times = wall time of the pyinfra weights run "
             "(incl. connecting and fact gathering)", "",
             "| N | one upstream pull | naive (all from upstream) | fan-out (seed first) | fan-out (pipelined) "
             "| naive / one | fan-out / one | pipelined / one |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['nodes']} | {r['one_s']:.1f} s | {r['naive_s']:.1f} s | {r['fanout_s']:.1f} s | "
                     f"{r['pipelined_s']:.1f} s | {r['naive_over_one']:.2f} | {r['fanout_over_one']:.2f} | "
                     f"{r['pipelined_over_one']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--mib", type=int, default=96, help="model size")
    p.add_argument("--lan-mbit", type=float, default=320)
    p.add_argument("--ratio", type=float, default=10, help="LAN rate / upstream rate")
    p.add_argument("--workers", type=int, default=1, help="files each pull fetches at a time")
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the bench needs root (the lab, tc)")
    up_mbit = args.lan_mbit / args.ratio
    model = build_model(args.mib)
    out = REPO / "bench" / "results" / f"fanout-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M}"
    rows = []
    try:
        info = labctl.up(max(args.nodes))
        nodes = [h for h in info["hosts"] if h["role"] == "node"]
        names = [h["name"] for h in nodes]
        unshape(names)
        pyinfra("base", {"model_repo_id": model["repo_id"], "model_revision": model["revision"]}, names)
        shape(names, args.lan_mbit, up_mbit)  # after base: the agent's install is not what is measured
        for n in args.nodes:
            rows.append(bench_n(n, nodes, model, args.workers))
            text = table(rows, model, args.lan_mbit, up_mbit, args.workers)  # kept after each N
            out.with_suffix(".md").write_text(text)
            out.with_suffix(".json").write_text(json.dumps({"model": model, "lan_mbit": args.lan_mbit,
                                                            "up_mbit": up_mbit, "workers": args.workers,
                                                            "rows": rows}, indent=1) + "\n")
    finally:
        unshape([f"node{i}" for i in range(1, max(args.nodes) + 1)])
        if not args.keep:
            labctl.down()
    print(table(rows, model, args.lan_mbit, up_mbit, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
