"""Planner agreement sweep on a real GPU: render, start vLLM, read its memory lines, stop.

For each case (catalog model, gpu_memory_utilization, max_model_len) this renders the H200
node's files from bench/h200/h200_node.py through r1deploy.serving.render (with the capacity plan for
the GPU nvidia-smi reports), builds the weight-less checkpoint (make_checkpoint.py), starts
the rendered unit (run_unit.py) and waits for vLLM's "GPU KV cache size" line, then stops it:
the KV cache is sized by then, so CUDA-graph capture and serving are skipped. Observations
and the planner's predictions are appended to OUT/observations.json after every case.

    python bench/h200/agree.py --out DIR [--deadline SECONDS] [--cases 7b:0.9:32768,...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MODELS = {
    "qwen-7b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "qwen-14b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
    "qwen-32b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
    "llama-8b": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
}
# Priority order: every model at the serving default first, then the other utilization, then
# the other context length. A case starts only if the deadline leaves room for it.
DEFAULT_CASES = (
    [(m, 0.9, 32768) for m in MODELS]
    + [(m, 0.8, 32768) for m in MODELS]
    + [(m, 0.9, 131072) for m in MODELS]
    + [(m, 0.8, 131072) for m in MODELS]
)

PATTERNS = {
    "weights_gib": re.compile(r"Model loading took ([\d.]+) GiB"),
    "kv_cache_gib": re.compile(r"Available KV cache memory: ([\d.]+) GiB"),
    "kv_cache_tokens": re.compile(r"GPU KV cache size: ([\d,]+) tokens"),
    "max_concurrency": re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x"),
    "cuda_graph_estimate_gib": re.compile(r"Estimated CUDA graph memory: ([\d.]+) GiB total"),
}
KEEP = re.compile(r"Model loading took|Available KV cache memory|GPU KV cache size|Maximum concurrency|"
                  r"CUDA graph memory|MemoryProfilingResult|memory_profiling|torch_peak|non_torch|"
                  r"Initial free memory|Free memory after profiling|max_num_batched_tokens|max_num_seqs|"
                  r"Chunked prefill is enabled|Using .* backend|Loading weights took|Compil")


def parse_log(text: str) -> dict:
    obs: dict = {}
    for key, pat in PATTERNS.items():
        m = pat.search(text)
        if not m:
            continue
        if key == "max_concurrency":
            obs["max_concurrency"] = float(m.group(2))
        elif key == "kv_cache_tokens":
            obs[key] = int(m.group(1).replace(",", ""))
        else:
            obs[key] = float(m.group(1))
    return obs


def host_data(model: str, util: float, max_len: int) -> dict:
    os.environ.update(R1_H200_MODEL=model, R1_H200_GPU_UTIL=str(util), R1_H200_MAX_MODEL_LEN=str(max_len))
    inv = runpy.run_path(str(ROOT / "bench/h200/h200_node.py"))
    return dict(inv["h200"][0][1])


def gpu_facts() -> tuple[str, int]:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout.splitlines()[0]
    name, mib = (s.strip() for s in out.split(","))
    return name, int(mib)


def gpu_used_mib() -> int:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else -1


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    for _ in range(40):  # the engine core process can outlive the API server by a moment
        if gpu_used_mib() < 2000:
            return
        time.sleep(0.5)


def run_case(key: str, util: float, max_len: int, out: Path, gpu: tuple[str, int], limit: float) -> dict:
    from r1deploy.serving.render import planned_engine_args, render_node
    from r1deploy.spec import spec_from_host_data

    sys.path.insert(0, str(ROOT / "bench/h200"))
    import make_checkpoint

    model = MODELS[key]
    case = f"{key}-u{util}-l{max_len}"
    cdir = out / case
    cdir.mkdir(parents=True, exist_ok=True)
    spec = spec_from_host_data("@local", host_data(model, util, max_len))
    make_checkpoint.build(model, spec.model.local_dir)
    from r1deploy.planner import plan_for_spec

    plan = plan_for_spec(spec, gpu_name=gpu[0], gpu_count=1, gpu_memory_mib=gpu[1])
    planned, source = planned_engine_args(spec, gpu[0], 1, gpu[1])
    node = render_node(spec, "@local", planned=planned, plan_source=source)
    for name, content in node.files.items():
        (cdir / name).write_text(content)
    current = Path("/etc/r1deploy/current")
    current.parent.mkdir(parents=True, exist_ok=True)
    if current.is_symlink() or current.exists():
        current.unlink()
    current.symlink_to(cdir)
    env = dict(os.environ, VLLM_LOGGING_LEVEL="DEBUG")
    logf = cdir / "vllm.log"
    t0 = time.monotonic()
    with open(logf, "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bench/h200/run_unit.py"), str(cdir / "r1-vllm.service")],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    status = "timeout"
    try:
        while time.monotonic() - t0 < limit:
            time.sleep(1)
            text = logf.read_text(errors="replace")
            if "Maximum concurrency for" in text:
                status = "ok"
                break
            if proc.poll() is not None:
                status = f"exited {proc.returncode}"
                break
    finally:
        stop(proc)
    text = logf.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if KEEP.search(ln)]
    rec = {
        "case": case, "model": model, "gpu_memory_utilization": util, "max_model_len": max_len,
        "status": status, "seconds": round(time.monotonic() - t0, 1),
        "gpu": {"name": gpu[0], "memory_mib": gpu[1]},
        "engine_args": node.engine_args,
        "observed": parse_log(text),
        "predicted": {k: getattr(plan, k) for k in ("weights_gib_per_gpu", "non_torch_gib", "activation_gib",
                                                    "cuda_graph_gib", "kv_cache_gib_per_gpu", "kv_cache_tokens",
                                                    "max_concurrency", "kv_bytes_per_token")},
        "log_lines": lines[:80],
    }
    if status != "ok":
        rec["log_tail"] = text.splitlines()[-40:]
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--deadline", type=float, default=540, help="seconds from now to stop starting cases")
    p.add_argument("--cases", help="comma list of model:util:maxlen, e.g. qwen-7b:0.9:32768")
    p.add_argument("--case-limit", type=float, default=150, help="seconds one start may take")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = DEFAULT_CASES
    if args.cases:
        cases = [(m, float(u), int(n)) for m, u, n in (c.split(":") for c in args.cases.split(","))]
    end = time.monotonic() + args.deadline
    gpu = gpu_facts()
    results_path = out / "observations.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    done = {r["case"] for r in results if r.get("status") == "ok"}
    seen_models: set[str] = {r["model"] for r in results if r.get("status") == "ok"}
    failures = 0
    for key, util, max_len in cases:
        if failures >= 2:
            print(f"skip {key}-u{util}-l{max_len}: two starts in a row failed", flush=True)
            continue
        case = f"{key}-u{util}-l{max_len}"
        if case in done:
            continue
        # A model's first start compiles (cold cache); later starts load the compiled graphs.
        need = 110 if MODELS[key] not in seen_models else 60
        left = end - time.monotonic()
        if left < need:
            print(f"skip {case}: {left:.0f}s left, needs ~{need}s", flush=True)
            continue
        rec = run_case(key, util, max_len, out, gpu, min(args.case_limit, left - 5))
        results.append(rec)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
        failures = 0 if rec["status"] == "ok" else failures + 1
        if rec["status"] == "ok":
            seen_models.add(rec["model"])
        o, pr = rec["observed"], rec["predicted"]
        print(f"{case:28} {rec['status']:8} {rec['seconds']:6.1f}s  weights {o.get('weights_gib')} vs "
              f"{pr['weights_gib_per_gpu']:.2f}  kv {o.get('kv_cache_gib')} vs {pr['kv_cache_gib_per_gpu']:.2f} GiB  "
              f"tokens {o.get('kv_cache_tokens')} vs {pr['kv_cache_tokens']}", flush=True)
        if rec["status"] != "ok":
            print("\n".join(rec.get("log_tail", [])[-25:]), flush=True)
    if results_path.exists():
        shutil.copy(results_path, out / "observations-final.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
