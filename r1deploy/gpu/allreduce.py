"""NCCL (RCCL on ROCm) all-reduce across all GPUs of one node, through the vLLM venv's torch.

`SCRIPT` is run on the host with that venv's python: it spawns one process per GPU
(torch.multiprocessing, no torchrun needed), all-reduces a buffer a bounded number of times
and prints one JSON line: {"gpus", "bytes", "seconds", "busbw_gbs"} or {"error"}. Bus
bandwidth is nccl-tests' definition: algbw * 2 (n-1) / n. On one GPU it prints
{"gpus": 1} without touching NCCL. The shell command around it bounds it in time.

    python3 -m r1deploy.gpu.allreduce            # run here (needs torch + GPUs)
"""

from __future__ import annotations

import json
import shlex

# Expected all-reduce bus bandwidth (GB/s) by the catalog's interconnect kind
# (r1deploy.planner.catalog.GpuSpec.interconnect), for a large message on a full node: nccl-tests
# all_reduce_perf on HGX H100/H200 reaches ~360-480 GB/s (NVLink 4 through NVSwitch); MI300X
# RCCL ~ 300 GB/s (Infinity Fabric, 7 links/GPU, 48 GB/s each way after overhead, ROCm/rccl#1210);
# PCIe 5 x16 ~ 40, PCIe 4 ~ 20. The gate fails below MIN_FRACTION of it: what it catches is a
# node whose GPUs talk over PCIe/host memory when they should use the fabric, not a 10% gap
# (our message is smaller than nccl-tests' largest, and the host may be busy).
EXPECTED_BUSBW_GBS = {"nvswitch": 360.0, "nvlink": 300.0, "infinity-fabric": 300.0, "pcie": 20.0}
MIN_FRACTION = 0.25
TIMEOUT_S = 180
MISSING_TORCH = "R1DEPLOY_NO_TORCH"

SCRIPT = r'''
import json, os, sys, time
try:
    import torch, torch.distributed as dist, torch.multiprocessing as mp
except Exception as exc:
    print(json.dumps({"error": f"R1DEPLOY_NO_TORCH {exc}"})); sys.exit(0)
MIB = int(os.environ.get("R1_ALLREDUCE_MIB", "256"))
ITERS = int(os.environ.get("R1_ALLREDUCE_ITERS", "20"))

def worker(rank, n, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=n, device_id=torch.device("cuda", rank))
    x = torch.ones(MIB * 2**20 // 4, dtype=torch.float32, device="cuda")
    for _ in range(5):
        dist.all_reduce(x)
    torch.cuda.synchronize(); dist.barrier()
    t0 = time.perf_counter()
    for _ in range(ITERS):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / ITERS
    ok = bool(torch.isfinite(x).all().item())
    if rank == 0:
        nbytes = x.numel() * 4
        out.put({"gpus": n, "bytes": nbytes, "seconds": dt, "finite": ok,
                 "busbw_gbs": nbytes / dt * 2 * (n - 1) / n / 1e9,
                 "backend": "rccl" if torch.version.hip else "nccl", "torch": torch.__version__})
    dist.destroy_process_group()

if __name__ == "__main__":
    if not torch.cuda.is_available():
        print(json.dumps({"error": "torch sees no GPU"})); sys.exit(0)
    n = torch.cuda.device_count()
    if n < 2:
        print(json.dumps({"gpus": n})); sys.exit(0)
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    ctx = mp.get_context("spawn"); out = ctx.Queue()
    try:
        mp.start_processes(worker, args=(n, port, out), nprocs=n, start_method="spawn")
        print(json.dumps(out.get(timeout=10)))
    except Exception as exc:
        print(json.dumps({"gpus": n, "error": f"{type(exc).__name__}: {str(exc)[-400:]}"}))
'''


def command(python: str, timeout_s: int = TIMEOUT_S) -> str:
    """A shell command that runs SCRIPT with `python`, bounded in time, always exit 0 and
    always one JSON line (a missing python or a hang is a value, not a failed fact)."""
    py = shlex.quote(python)
    return (f"if ! command -v {py} >/dev/null 2>&1; then echo '{{\"error\": \"{MISSING_TORCH} no {python}\"}}'; "
            "else f=$(mktemp /tmp/r1-allreduce.XXXXXX.py) && cat > \"$f\" <<'R1_ALLREDUCE_EOF'\n"
            f"{SCRIPT}\nR1_ALLREDUCE_EOF\n"
            f"timeout -k 10 {int(timeout_s)} {py} \"$f\" 2>/dev/null "
            f"|| echo '{{\"error\": \"all-reduce did not finish within {int(timeout_s)} s (or crashed)\"}}'; "
            "rm -f \"$f\"; fi")


def parse(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {"error": f"no result line: {text.strip()[-200:]}"}


def check(result: dict | None, interconnect: str | None, required: bool) -> tuple[bool | None, str] | None:
    """(ok, detail) for the gate; None (no record) when not required and torch is absent."""
    if result is None:
        return (None, "all-reduce not run") if required else None
    error = result.get("error")
    if error and MISSING_TORCH in error:
        return (None, f"no torch to run it: {error.replace(MISSING_TORCH, '').strip()}") if required else None
    if error:
        return False, f"all-reduce failed on {result.get('gpus', '?')} GPU(s): {error}"
    gpus = result.get("gpus", 0)
    if gpus < 2:
        return True, f"{gpus} GPU: no all-reduce"
    if not result.get("finite", True):
        return False, "all-reduce returned non-finite values"
    bw = float(result["busbw_gbs"])
    size = f"{result['bytes'] / 2**20:.0f} MiB"
    expected = EXPECTED_BUSBW_GBS.get(interconnect or "")
    if expected is None:
        return True, f"{gpus} GPUs, {size}: bus bandwidth {bw:.1f} GB/s (no expected figure for {interconnect or 'this GPU'})"
    ratio = bw / expected
    detail = (f"{gpus} GPUs, {size}: bus bandwidth {bw:.1f} GB/s = {ratio:.2f} x the expected "
              f"{expected:g} GB/s ({interconnect})")
    return ratio >= MIN_FRACTION, detail + ("" if ratio >= MIN_FRACTION else f", below {MIN_FRACTION:g} x")


def main() -> int:
    import subprocess
    import sys

    done = subprocess.run(["sh", "-c", command(sys.executable)], capture_output=True, text=True)
    print(json.dumps(parse(done.stdout)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
