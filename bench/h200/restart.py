"""Restart cost and first-wave stall of the rendered unit on the real H200 (issue 9).

Each run starts the rendered r1-vllm.service the way systemd would (bench/h200/run_unit.py),
with the compile caches the unit's environment names either emptied (cold) or kept (warm),
and measures:

- time to healthy: from the start of the unit's process to the first 200 on /health;
- the project's warm-up (python -m r1deploy.serving.warmup with the rollout spec's defaults), unless
  the run is `*-nowarmup`;
- a first wave at concurrency 16 (16 streaming completions, 1024 random prompt tokens, 256
  generated with ignore_eos, sampling cycling over the generation-config default and every
  variant the spec's warm-up sends), then a steady wave of the same shape (new prompts);
- TTFT p50/p90/max of each wave, the vLLM log lines about JIT compilation during each phase;
- SIGTERM and the time until the process group is gone.

    python3 bench/h200/restart.py --rendered DIR --out DIR --runs cold-nowarmup,cold,warm,warm,warm \
        --deadline SECONDS

One JSON per run goes to OUT (run-<n>-<kind>.json, appended across calls: the numbering
continues), and OUT/table.md from every run there (`--table` alone rewrites it). A run that would not fit
in what is left of --deadline is skipped (cold needs ~200 s, warm ~110 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench/h200"))

from run_unit import parse_env_file  # noqa: E402

from r1deploy.serving.smoke import EventStream  # noqa: E402
from r1deploy.spec import RolloutSection  # noqa: E402

URL = "http://127.0.0.1:8000"
NEEDS_S = {"cold": 200, "warm": 110}
# Caches that vLLM, torch and Triton fall back to when the unit's env names none: emptied for a
# cold start too, and measured, so a cache that escapes the unit's directory shows up.
DEFAULT_CACHES = ["/root/.triton", "/root/.cache/vllm", "/root/.cache/flashinfer", "/tmp/torchinductor_root",
                  "/root/.nv/ComputeCache"]  # the last: CUDA's own PTX JIT cache (CUDA_CACHE_PATH)
UNIT_CACHE = Path("/var/cache/r1deploy")  # XDG_CACHE_HOME of the unit: anything else it caches
CACHE_KEYS = ["VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "FLASHINFER_WORKSPACE_BASE"]
JIT_MARKERS = ("JIT compil", "jit compil", "Compiling a graph", "torch.compile takes", "Autotun")
# Where a start spends its time (vLLM 0.26's own lines): compile vs cache load, graphs, engine init.
STARTUP_MARKERS = (*JIT_MARKERS, "Directly load", "from the cache", "Graph capturing finished", "init engine",
                   "Model loading took", "Dynamo bytecode transform", "Application startup complete")


def du_mib(path: str) -> float | None:
    p = Path(path)
    if not p.exists():
        return None
    total = sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
    return round(total / 2**20, 1)


def cache_dirs(rendered: Path) -> dict[str, str]:
    env = parse_env_file((rendered / "vllm.env").read_text())
    return {k: env[k] for k in CACHE_KEYS if k in env}


def cache_sizes(rendered: Path) -> dict[str, float | None]:
    sizes = {k: du_mib(v) for k, v in cache_dirs(rendered).items()}
    sizes.update({p: du_mib(p) for p in DEFAULT_CACHES})
    if UNIT_CACHE.is_dir():
        sizes.update({str(d): du_mib(str(d)) for d in sorted(UNIT_CACHE.iterdir()) if d.name != "compile"})
    return sizes


def empty_caches(rendered: Path) -> list[str]:
    gone = []
    others = [str(d) for d in UNIT_CACHE.iterdir() if d.name != "hf"] if UNIT_CACHE.is_dir() else []
    for path in [*cache_dirs(rendered).values(), *DEFAULT_CACHES, *others]:
        if Path(path).exists():
            shutil.rmtree(path, ignore_errors=True)
            gone.append(path)
    return gone


def served_model(rendered: Path) -> str:
    for line in (rendered / "vllm.yaml").read_text().splitlines():
        if line.startswith("served-model-name:"):
            return line.split(":", 1)[1].strip().strip('"')
    raise SystemExit("no served-model-name in vllm.yaml")


def log_jit_lines(log: Path, start: int, end: int | None = None, markers: tuple = JIT_MARKERS) -> list[str]:
    data = log.read_bytes()[start:end].decode(errors="replace")
    return [ln.strip()[:240] for ln in data.splitlines() if any(m in ln for m in markers)]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q  # linear interpolation, as numpy's default
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 1)


def one_completion(model: str, prompt: list[int], sampling: dict, max_tokens: int, out: dict) -> None:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}, **sampling}
    t0 = time.monotonic()
    out.update(sampling=sampling, ok=False, ttft_ms=None)
    try:
        with requests.post(f"{URL}/v1/completions", json=body, stream=True, timeout=120) as r:
            r.raise_for_status()
            events = EventStream(r)
            for chunk in events:
                if out["ttft_ms"] is None and chunk.get("choices"):
                    out["ttft_ms"] = round((time.monotonic() - t0) * 1e3, 1)
                if chunk.get("usage"):
                    out["completion_tokens"] = chunk["usage"].get("completion_tokens")
            out["ok"] = events.done
    except (requests.RequestException, ValueError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    out["seconds"] = round(time.monotonic() - t0, 3)


def wave(model: str, variants: list[dict], seed: int, n: int = 16, in_len: int = 1024,
         out_len: int = 256, vocab: int = 150000) -> dict:
    """n concurrent streaming completions of random token ids (no shared prefix), like
    `vllm bench serve --dataset-name random --ignore-eos`."""
    rng = random.Random(seed)
    prompts = [[rng.randrange(1000, vocab) for _ in range(in_len)] for _ in range(n)]
    results = [{} for _ in range(n)]
    threads = [threading.Thread(target=one_completion,
                                args=(model, prompts[i], variants[i % len(variants)], out_len, results[i]))
               for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    ttfts = [r["ttft_ms"] for r in results if r.get("ttft_ms") is not None]
    tokens = sum(r.get("completion_tokens") or 0 for r in results)
    return {"requests": n, "ok": sum(bool(r.get("ok")) for r in results), "wall_s": round(wall, 2),
            "ttft_ms_p50": pct(ttfts, 0.5), "ttft_ms_p90": pct(ttfts, 0.9),
            "ttft_ms_max": max(ttfts) if ttfts else None,
            "first_done_s": min((r["seconds"] for r in results if r.get("ok")), default=None),
            "output_tok_s": round(tokens / wall, 1) if wall else None, "detail": results}


def gpu_used_mib() -> int:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else -1


def stop(proc: subprocess.Popen) -> dict:
    t0 = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=45)
        how = "SIGTERM"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        how = "SIGKILL after 45 s"
    exited = time.monotonic() - t0
    for _ in range(30):  # EngineCore children may hold the GPU a moment longer
        if gpu_used_mib() < 2000:
            break
        time.sleep(1)
    return {"how": how, "exit_s": round(exited, 1), "gpu_free_s": round(time.monotonic() - t0, 1),
            "rc": proc.returncode}


def start(rendered: Path, log: Path, pidfile: Path | None) -> tuple[subprocess.Popen, float]:
    current = Path("/etc/r1deploy/current")
    if current.is_symlink() or current.exists():
        current.unlink() if current.is_symlink() else shutil.rmtree(current)
    current.parent.mkdir(parents=True, exist_ok=True)
    current.symlink_to(rendered)
    for d in ("/var/lib/r1deploy", "/var/cache/r1deploy"):
        os.makedirs(d, exist_ok=True)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench/h200/run_unit.py"), str(rendered / "r1-vllm.service")],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    if pidfile:  # device.sh stops this process group if the command is cut short
        pidfile.write_text(str(proc.pid))
    return proc, t0


def wait_healthy(proc: subprocess.Popen, limit_s: float) -> bool:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            if requests.get(f"{URL}/health", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.25)
    return False


def warm_up(model: str) -> dict:
    r = RolloutSection()
    cmd = [sys.executable, "-m", "r1deploy.serving.warmup", URL, "--model", model,
           "--system-prompt", r.warmup_system_prompt, "--sampling", json.dumps(r.warmup_sampling),
           "--concurrency", str(r.warmup_concurrency), "--long-tokens", str(r.warmup_long_prompt_tokens),
           "--max-tokens", str(r.warmup_max_tokens)]
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return {"command": " ".join(cmd[1:]), "rc": None, "seconds": 120, "error": "timed out after 120 s"}
    got = {"command": " ".join(cmd[1:]), "rc": done.returncode, "seconds": round(time.monotonic() - t0, 2)}
    try:
        got["result"] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        got["stdout"], got["stderr"] = done.stdout[-2000:], done.stderr[-2000:]
    return got


def one_run(n: int, kind: str, rendered: Path, out: Path, deadline: float, pidfile: Path | None) -> dict:
    model = served_model(rendered)
    cold, warmup = kind.startswith("cold"), not kind.endswith("nowarmup")
    rec: dict = {"run": n, "kind": kind, "cold": cold, "warmup": warmup,
                 "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    rec["emptied"] = empty_caches(rendered) if cold else []
    rec["caches_before_mib"] = cache_sizes(rendered)
    log = out / f"run-{n}-{kind}.log"
    proc, t0 = start(rendered, log, pidfile)
    try:
        healthy = wait_healthy(proc, deadline - time.monotonic() - 60)
        rec["healthy"] = healthy
        rec["to_healthy_s"] = round(time.monotonic() - t0, 1) if healthy else None
        if not healthy:
            rec["log_tail"] = log.read_text(errors="replace")[-4000:]
            return rec
        mark = log.stat().st_size
        if warmup:
            rec["warmup_result"] = warm_up(model)
        mark2 = log.stat().st_size
        rec["jit_lines_warmup"] = log_jit_lines(log, mark, mark2)
        variants = [{}] + RolloutSection().warmup_sampling  # {} = the model's generation config
        rec["first_wave"] = wave(model, variants, seed=1000 + n)
        mark3 = log.stat().st_size
        rec["jit_lines_first_wave"] = log_jit_lines(log, mark2, mark3)
        rec["steady_wave"] = wave(model, variants, seed=2000 + n)
        rec["jit_lines_steady_wave"] = log_jit_lines(log, mark3)
        fw, sw = rec["first_wave"]["ttft_ms_p90"], rec["steady_wave"]["ttft_ms_p90"]
        rec["first_over_steady_p90"] = round(fw / sw, 2) if fw and sw else None
        rec["startup_lines"] = log_jit_lines(log, 0, mark, STARTUP_MARKERS)[:40]
    finally:
        rec["stop"] = stop(proc)
        if pidfile:
            pidfile.unlink(missing_ok=True)
        rec["caches_after_mib"] = cache_sizes(rendered)
    return rec


def table(out: Path) -> str:
    runs = sorted((json.loads(p.read_text()) for p in out.glob("run-*.json")), key=lambda r: r["run"])
    colds = [r["to_healthy_s"] for r in runs if r["cold"] and r.get("to_healthy_s")]
    cold_ref = statistics.mean(colds) if colds else None
    rows = ["| run | kind | caches | warm-up | to healthy (s) | / cold mean | first wave TTFT p90 (ms) "
            "| steady TTFT p90 (ms) | first / steady | first wave TTFT max (ms) | JIT lines in first wave |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        fw, sw = r.get("first_wave") or {}, r.get("steady_wave") or {}
        ratio = (f"{r['to_healthy_s'] / cold_ref:.2f}" if cold_ref and r.get("to_healthy_s") and not r["cold"]
                 else "")
        rows.append(f"| {r['run']} | {r['kind']} | {'emptied' if r['cold'] else 'kept'} | "
                    f"{'yes' if r['warmup'] else 'no'} | {r.get('to_healthy_s')} | {ratio} | "
                    f"{fw.get('ttft_ms_p90')} | {sw.get('ttft_ms_p90')} | {r.get('first_over_steady_p90')} | "
                    f"{fw.get('ttft_ms_max')} | {len(r.get('jit_lines_first_wave') or [])} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rendered", type=Path, help="the rendered node dir (needed with --runs)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--runs", default="")
    p.add_argument("--deadline", type=float, default=500, help="seconds from now this command may use")
    p.add_argument("--table", action="store_true")
    p.add_argument("--pidfile", type=Path)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.runs and not a.rendered:
        p.error("--runs needs --rendered")
    deadline = time.monotonic() + a.deadline
    n = len(list(a.out.glob("run-*.json")))
    for kind in [k for k in a.runs.split(",") if k]:
        left = deadline - time.monotonic()
        if left < NEEDS_S["cold" if kind.startswith("cold") else "warm"]:
            print(f"restart: skip {kind}: {left:.0f} s left", flush=True)
            continue
        n += 1
        print(f"restart: run {n} {kind} ({left:.0f} s left)", flush=True)
        try:
            rec = one_run(n, kind, a.rendered, a.out, deadline, a.pidfile)
        except Exception as exc:  # keep the run's number and the error; the next run starts clean
            rec = {"run": n, "kind": kind, "cold": kind.startswith("cold"), "warmup": not kind.endswith("nowarmup"),
                   "error": f"{type(exc).__name__}: {exc}", "stop": {}}
        (a.out / f"run-{n}-{kind}.json").write_text(json.dumps(rec, indent=1))
        fw, sw = rec.get("first_wave") or {}, rec.get("steady_wave") or {}
        print(f"restart: run {n} {kind}: healthy in {rec.get('to_healthy_s')} s; first-wave TTFT p90 "
              f"{fw.get('ttft_ms_p90')} ms, steady {sw.get('ttft_ms_p90')} ms, "
              f"warm-up {(rec.get('warmup_result') or {}).get('seconds', '-')} s; "
              f"stop {rec['stop']}", flush=True)
    if a.table or a.runs:
        text = table(a.out)
        (a.out / "table.md").write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
