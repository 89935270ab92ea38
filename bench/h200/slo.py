"""SLO capacity on the GPU host: hand-run `vllm serve` (defaults, defaults + FP8 flags) against the
unit r1deploy renders, each searched for the highest Poisson rate within TTFT p99 / TPOT p99.

Run by `device.sh slo` after `setup` (vLLM from /tmp/site). Every config: start, wait for /health,
keep vLLM's memory lines, the project's warm-up (python -m r1deploy.serving.warmup with the rollout
spec's defaults), then r1deploy.observe.capacity.search over r1deploy.observe.loadgen points, stop.

    python3 bench/h200/slo.py --model DeepSeek-R1-Distill-Qwen-32B --configs defaults,rendered \\
        --start defaults=2,rendered=8 --out /tmp/r1res/slo/32b-a --budget 540
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.h200.run_unit import parse_env_file  # noqa: E402
from r1deploy.observe import capacity, loadgen, workload  # noqa: E402
from r1deploy.spec import RolloutSection  # noqa: E402

MEMORY = re.compile(r"Model loading took|Available KV cache memory|GPU KV cache size|Maximum concurrency|"
                    r"max_num_batched_tokens|max_num_seqs|Asynchronous scheduling|Using .* backend|"
                    r"Chunked prefill|quantization|Performance mode|preempt", re.I)
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[+{time.monotonic() - T0:5.0f}s] {msg}", flush=True)


def healthy(port: int = 8000) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
    except OSError:
        return False


def start(argv: list[str], env: dict[str, str], logf: Path) -> subprocess.Popen:
    (logf.parent / f"{logf.stem}.command.txt").write_text(" ".join(argv) + "\n")
    return subprocess.Popen(argv, env={**os.environ, **env}, stdout=logf.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True, cwd="/")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(40)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    for _ in range(40):  # the GPU's memory back before the next server
        used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True).stdout.split()
        if used and int(used[0]) < 2000:
            return
        time.sleep(1)


def wait_health(proc: subprocess.Popen, limit_s: float) -> bool:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if healthy():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(2)
    return False


def variant(rendered: Path, config: str) -> Path:
    """`rendered:key=value[:key=value]`: the rendered unit with engine args changed in its vllm.yaml
    (an experiment beside the plan, e.g. rendered:max-num-batched-tokens=2048 for the old budget);
    `rendered:-key` drops one (rendered:-kv-offloading-size:-kv-offloading-backend is the plan without
    its KV offload: vLLM takes a size of 0 as "on" and refuses it)."""
    d = rendered.parent / f"unit-{dirname(config)}"
    if d.exists():
        return d
    d.mkdir(parents=True)
    text = (rendered / "vllm.yaml").read_text()
    for kv in config.split(":")[1:]:
        if kv.startswith("-"):
            text = re.sub(rf"^{re.escape(kv[1:])}: .*\n", "", text, flags=re.M)
            continue
        key, value = kv.split("=", 1)
        line = f"{key}: {value}"
        text, n = re.subn(rf"^{re.escape(key)}: .*$", line, text, flags=re.M)
        text += "" if n else line + "\n"
    for f in rendered.iterdir():
        (d / f.name).write_text(text if f.name == "vllm.yaml" else f.read_text())
    return d


def dirname(config: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", config)


def server_argv(config: str, ckpt: str, rendered: Path) -> tuple[list[str], dict[str, str], str]:
    env = parse_env_file((rendered / "vllm.env").read_text())  # the same env for all: cache dirs, no FlashInfer
    if config.startswith("rendered:"):
        rendered = variant(rendered, config)
    if config.startswith("rendered"):
        # The unit reads its files where the vllm stage puts them (/etc/r1deploy/current -> the release).
        current = Path("/etc/r1deploy/current")
        current.parent.mkdir(parents=True, exist_ok=True)
        if current.is_symlink() or current.exists():
            current.unlink()
        current.symlink_to(rendered)
        for d in ("/var/lib/r1deploy", "/var/cache/r1deploy"):
            Path(d).mkdir(parents=True, exist_ok=True)
        return [sys.executable, str(ROOT / "bench/h200/run_unit.py"), str(rendered / "r1-vllm.service")], env, \
            json.loads(re.search(r"^served-model-name: (.*)$", (rendered / "vllm.yaml").read_text(), re.M)[1])
    # vLLM's defaults but the context: the model's 131,072 tokens do not fit a 32B's BF16 KV cache on
    # an H100 (vLLM refuses to start: "estimated maximum model length is 40704"), so a hand-run server
    # needs --max-model-len; it gets the plan's 32,768.
    argv = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", ckpt, "--load-format", "dummy",
            "--port", "8000", "--served-model-name", config, "--max-model-len", "32768"]
    if config == "fp8-flags":
        argv += ["--quantization", "fp8", "--kv-cache-dtype", "fp8"]
    return argv, env, config


def warm_up(name: str, d: Path) -> None:
    r = RolloutSection()
    argv = [sys.executable, "-m", "r1deploy.serving.warmup", "http://127.0.0.1:8000", "--model", name,
            "--sampling", json.dumps(r.warmup_sampling), "--concurrency", str(r.warmup_concurrency),
            "--long-tokens", str(r.warmup_long_prompt_tokens), "--max-tokens", str(r.warmup_max_tokens)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=ROOT)
    (d / "warmup.txt").write_text(" ".join(argv) + "\n" + done.stdout + done.stderr)


def start_rate(spec: str, results: dict[str, dict]) -> float:
    """A start rate: a number, or one that decides a ratio against a config measured before it:
    `OTHER*K` = K x OTHER's lowest failing rate (the candidate passing there proves >= K x),
    `OTHER/K` = OTHER's capacity / K (the baseline failing there proves the candidate >= K x);
    `EXPR|RATE`: RATE where OTHER has no figure (it did not start)."""
    spec, _, fallback = spec.partition("|")
    m = re.fullmatch(r"(.+)([*/])([0-9.]+)", spec)
    if not m:
        return float(spec)
    other, op, k = results.get(m[1], {}), m[2], float(m[3])
    if not other.get("capacity_req_s") and not (other.get("bracket") or [None, None])[1]:
        return float(fallback or 4.0)
    if op == "*":
        return round(k * (other["bracket"][1] or other["capacity_req_s"]), 3)
    return round(other["capacity_req_s"] / k, 3)


def run_config(config: str, args: argparse.Namespace, rendered: Path, budget_s: float,
               results: dict[str, dict]) -> dict:
    d = Path(args.out) / dirname(config)
    d.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    argv, env, name = server_argv(config, args.ckpt, rendered)
    log(f"{config}: starting ({' '.join(argv[-8:])})")
    proc = start(argv, env, d / "vllm.log")
    result: dict = {"config": config, "command": argv, "served_model_name": name}
    try:
        if not wait_health(proc, min(args.start_limit, budget_s - 30)):
            log(f"{config}: not healthy")
            result["error"] = "not healthy"
            return result
        result["start_s"] = round(time.monotonic() - t_start, 1)
        log(f"{config}: healthy after {result['start_s']} s")
        warm_up(name, d)
        log(f"{config}: warmed up")
        slo = capacity.SloTarget(args.slo_ttft_ms, args.slo_tpot_ms)
        point_s = args.lead + args.repeats * args.window + 15
        deadline = t_start + budget_s - 20

        def measure(rate: float) -> list[capacity.RepeatResult]:
            if time.monotonic() + point_s > deadline:
                raise TimeoutError
            n = loadgen.arrivals_needed(rate, args.repeats, args.window, args.lead)
            seeded = workload.make(args.workload, n, seed=args.seed + int(rate * 1000))
            return loadgen.measure_point("http://127.0.0.1:8000", name, seeded, rate, repeats=args.repeats,
                                         window_s=args.window, lead_s=args.lead, seed=args.seed, slo=slo)

        def on_point(p: capacity.Point) -> None:
            log(f"{config}: rate {p.rate:g} {'PASS' if p.passed else 'fail'} ttft p99 "
                f"{p.median('ttft_p99_ms'):.0f} ms ({p.spread('ttft_p99_ms')[0]:.0f}-{p.spread('ttft_p99_ms')[1]:.0f}) "
                f"tpot p99 {p.median('tpot_p99_ms'):.1f} ms ({p.spread('tpot_p99_ms')[0]:.1f}-"
                f"{p.spread('tpot_p99_ms')[1]:.1f}) out {p.median('output_tok_s'):.0f} tok/s failed "
                f"{sum(r.failed for r in p.repeats)}")

        s = capacity.Search(start_rate(args.starts[config], results), slo, args.points, args.tolerance,
                            growth=args.growth)
        result["start_rate"] = s.start
        log(f"{config}: search from {s.start:g} req/s ({args.starts[config]}), growth {args.growth:g}, "
            f"tolerance {args.tolerance:g}, at most {args.points} points")
        try:
            while (rate := s.next_rate()) is not None:
                on_point(s.add(rate, measure(rate)))
        except TimeoutError:
            log(f"{config}: out of budget after {len(s.points)} point(s)")
            result["stopped"] = "budget"
        result.update(capacity.summary(s, config))
        log(f"{config}: capacity {result['capacity_req_s']} req/s, bracket {result['bracket']}")
    finally:
        stop(proc)
        lines = [x for x in (d / "vllm.log").read_text(errors="replace").splitlines() if MEMORY.search(x)]
        (d / "memory-lines.txt").write_text("\n".join(lines[:80]) + "\n")
        (d / "capacity.json").write_text(json.dumps(result, indent=1))
    return result


def render(args: argparse.Namespace, out: Path) -> Path:
    rendered = out / "rendered"
    mib = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout.split()[0]
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.splitlines()[0]
    argv = [sys.executable, "-m", "r1deploy", "render", "--inventory", "bench/h200/h200_node.py", "--host", "@local",
            "--out", str(rendered), "--gpu", gpu, "--gpus", "1", "--gpu-memory-mib", mib]
    plan = [sys.executable, "-m", "r1deploy", "plan", "--inventory", "bench/h200/h200_node.py",
            "--gpu", gpu, "--gpu-memory-mib", mib]
    text = ""
    for a in (argv, plan):
        done = subprocess.run(a, capture_output=True, text=True, cwd=ROOT)
        text += "$ " + " ".join(a) + "\n" + done.stdout + done.stderr + "\n"
    (out / "render.txt").write_text(text)
    return rendered


def mem_total_gib() -> float:
    """This machine's RAM, as the converge's HostMemory fact reads it (MemTotal)."""
    kib = re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)
    return int(kib[1]) / 2**20


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--configs", default="defaults,fp8-flags,rendered")
    p.add_argument("--start", default="", help="config=rate,... first rate of each search")
    p.add_argument("--out", required=True)
    p.add_argument("--budget", type=float, default=540)
    p.add_argument("--workload", default="random", choices=workload.NAMES)
    p.add_argument("--host-memory-gib", type=float, help="plan_host_memory_gib for the rendered plan (its KV "
                   "offload is sized from it; default: this machine's MemTotal)")
    p.add_argument("--points", type=int, default=4)
    p.add_argument("--tolerance", type=float, default=0.15)
    p.add_argument("--growth", type=float, default=2.0, help="step while all pass / all fail (2: double)")
    p.add_argument("--share", default="", help="config=weight,... of the call's budget (default equal)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--window", type=float, default=10)
    p.add_argument("--lead", type=float, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-limit", type=float, default=300)
    p.add_argument("--slo-ttft-ms", type=float, default=1000)
    p.add_argument("--slo-tpot-ms", type=float, default=50)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.update(R1_H200_MODEL=args.model, R1_H200_FP8="1", R1_H200_SLO=f"{args.slo_ttft_ms},{args.slo_tpot_ms}",
                      R1_H200_HOST_MEMORY_GIB=str(int(args.host_memory_gib or mem_total_gib())))
    from r1deploy.fleet.inventory import load_specs

    args.ckpt = load_specs("bench/h200/h200_node.py")["@local"].model.local_dir
    subprocess.run([sys.executable, "bench/h200/make_checkpoint.py", args.model, args.ckpt], check=True, cwd=ROOT,
                   capture_output=True)
    rendered = render(args, out)
    configs = args.configs.split(",")
    args.shares = {k: float(v) for k, v in (x.rsplit("=", 1) for x in args.share.split(",") if x)}
    args.starts = {c: "4.0" for c in configs} | {k: v for k, v in
                                                 (x.rsplit("=", 1) for x in args.start.split(",") if x)}
    results = {}
    for i, config in enumerate(configs):
        left = args.budget - (time.monotonic() - T0)
        share = args.shares.get(config, 1.0) / sum(args.shares.get(c, 1.0) for c in configs[i:])
        results[config] = run_config(config, args, rendered, left * share, results)
    summary = {"model": args.model, "workload": args.workload, "slo_ms": [args.slo_ttft_ms, args.slo_tpot_ms],
               "capacity": {c: r.get("capacity_req_s") for c, r in results.items()}}
    summary["ratios"] = {f"{a}/{b}": capacity.ratio(ra, rb) for a, ra in results.items()
                         if a.startswith("rendered") and ra.get("capacity_req_s") is not None
                         for b, rb in results.items() if b != a and rb.get("capacity_req_s")}
    # Each config's lowest-rate point (with --points 1 and equal starts: the same rate for every config, the
    # KV offload on/off comparison's TTFT p50/p99).
    summary["ttft_ms"] = {c: {"rate": p["rate"], "p50": p["ttft_p50_ms"], "p99": p["ttft_p99_ms"]}
                          for c, r in results.items() for p in r.get("points", [])[:1]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
