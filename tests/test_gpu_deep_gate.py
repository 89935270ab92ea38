"""The deeper gate on recorded H200 outputs and hand-made failures: XIDs since boot, PCIe link,
thermals, power, volatile ECC, and the all-reduce verdicts (its script runs on the real H200
through bench/h200/gate.sh; here its JSON results are judged)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from r1deploy.gpu import allreduce  # noqa: E402
from r1deploy.gpu import gate as gpu_gate  # noqa: E402
from r1deploy.gpu import health as gpu_health  # noqa: E402
from r1deploy.gpu import nvidia as gpu  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "gpu-hosts"
DEEP = gpu_gate.Expectations(model="H200", count=2, deep=True)


def gate(folder: str, exp=DEEP, **extra):
    out = {**gpu_gate.outputs_from_dir(FIX / folder), **extra}
    checks = gpu_gate.run_gate(folder, gpu_gate.Observation.from_outputs(out), exp)
    return {c.check: c for c in checks}, gpu_gate.exit_code(checks)


def test_recorded_h200_pair_passes_every_deep_check_with_a_clean_log():
    checks, code = gate("h200x2-clean-log-handmade")
    assert code == 0, checks
    assert checks["xid"].detail == "no XID or RAS event since boot"
    assert checks["pcie-link"].detail == "gen 5 x16 = max on all GPUs"
    assert checks["ecc-volatile"].detail == "0 volatile uncorrectable ECC errors on 2 GPU(s)"
    assert "of 700 W limit" in checks["power"].detail and "below T.Limit" in checks["thermals"].detail


def test_recorded_outputs_without_a_kernel_log_cannot_say_ok():
    checks, code = gate("h200x2-nvlink-ubuntu2404")  # the real recording has no kernel log
    assert checks["xid"].ok is None and code == 2


def test_an_xid_in_the_kernel_log_fails_the_gate():
    checks, code = gate("h200x2-xid79-handmade")
    assert code == 1 and checks["xid"].ok is False
    assert "0000:00:07: Xid 79 pid=2214, name=python3, GPU has fallen off the bus." in checks["xid"].detail


def test_an_application_xid_is_reported_not_failed():
    checks, code = gate("h200x2-xid13-app-handmade")
    assert code == 0 and checks["xid"].detail.endswith("application events: Xid 13")


def test_degraded_link_throttling_and_volatile_ecc_fail():
    checks, code = gate("h200x2-pcie-x8-hot-handmade")
    assert code == 1
    assert checks["pcie-link"].detail == "PCIe link degraded: 00000000:00:06.0: x8 of x16"
    assert checks["thermals"].detail == "00000000:00:06.0: HW Thermal Slowdown active"
    assert "00000000:00:06.0: 3" in checks["ecc-volatile"].detail


def test_unreadable_kernel_log_is_could_not_check():
    assert gpu_health.kernel_check(f"{gpu.MISSING} kernel log\n") == (None, "kernel log unreadable (no journal, dmesg restricted?)")


@pytest.mark.parametrize("result,interconnect,ok,detail", [
    ({"gpus": 1}, "nvswitch", True, "1 GPU: no all-reduce"),
    ({"gpus": 8, "bytes": 256 << 20, "seconds": 0.002, "busbw_gbs": 235.0, "finite": True}, "nvswitch", True,
     "8 GPUs, 256 MiB: bus bandwidth 235.0 GB/s = 0.65 x the expected 360 GB/s (nvswitch)"),
    ({"gpus": 8, "bytes": 256 << 20, "seconds": 0.05, "busbw_gbs": 18.8, "finite": True}, "nvswitch", False,
     "8 GPUs, 256 MiB: bus bandwidth 18.8 GB/s = 0.05 x the expected 360 GB/s (nvswitch), below 0.25 x"),
    ({"gpus": 2, "error": "DistBackendError: NCCL error"}, "nvlink", False,
     "all-reduce failed on 2 GPU(s): DistBackendError: NCCL error"),
])
def test_allreduce_verdicts(result, interconnect, ok, detail):
    assert allreduce.check(result, interconnect, required=True) == (ok, detail)


def test_allreduce_without_torch_is_omitted_in_auto_and_could_not_check_when_required():
    missing = allreduce.parse(f'{{"error": "{allreduce.MISSING_TORCH} no /opt/x/bin/python"}}')
    assert allreduce.check(missing, "nvswitch", required=False) is None
    assert allreduce.check(missing, "nvswitch", required=True)[0] is None


def test_allreduce_command_runs_here_and_says_what_it_found():
    """The real script, through the real shell command, on this machine's python."""
    import subprocess

    done = subprocess.run(["sh", "-c", allreduce.command(sys.executable, timeout_s=60)],
                          capture_output=True, text=True, timeout=90)
    result = allreduce.parse(done.stdout)
    assert done.returncode == 0
    assert "error" in result or result.get("gpus", 0) >= 0  # no torch / no GPU here: a value, not a crash


def test_gate_json_has_the_allreduce_record_when_asked():
    exp = gpu_gate.Expectations(count=2, allreduce="yes", interconnect="nvlink")
    checks, _ = gate("h200x2-nvlink-ubuntu2404", exp=exp,
                     allreduce='{"gpus": 2, "bytes": 268435456, "seconds": 0.003, "busbw_gbs": 160.2, "finite": true}')
    assert checks["nccl-allreduce"].ok is True
