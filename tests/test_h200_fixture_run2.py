"""Outputs recorded on the real H200 by bench/h200/device.sh (facts stage) pass the gate as that host did."""

import json
from pathlib import Path

from r1deploy.cli import main
from r1deploy.gpu import gate as gpu_gate

RUN2 = Path(__file__).parent / "fixtures" / "gpu-hosts" / "h200x1-ubuntu2404-run2"
EVIDENCE = Path(__file__).resolve().parents[1] / "bench" / "results" / "h200" / "facts"


def test_recorded_probes_pass_the_gate():
    exp = gpu_gate.Expectations(model="H200", count=1, min_memory_mib=143000, driver_branch="580",
                                open_kernel_modules=True, fabric_manager="no")
    checks = gpu_gate.run_gate("h200", gpu_gate.Observation.from_outputs(gpu_gate.outputs_from_dir(RUN2)), exp)
    assert gpu_gate.exit_code(checks) == 0, gpu_gate.render_table(checks)


def test_same_verdict_as_on_the_host(capsys):
    """gpu-check on the recorded outputs gives the checks the live run on the host printed."""
    rc = main(["gpu-check", "--from-dir", str(RUN2), "--expect-model", "H200", "--expect-count", "1",
               "--min-memory-mib", "143000", "--driver-branch", "580", "--fabric-manager", "no", "--json"])
    here = {r["check"]: r["ok"] for r in json.loads(capsys.readouterr().out)}
    live = {r["check"]: r["ok"] for r in json.loads((EVIDENCE / "gpu-check.json").read_text())}
    assert rc == 0
    assert here == live


def test_two_gpus_expected_fails_like_on_the_host():
    rc = main(["gpu-check", "--from-dir", str(RUN2), "--expect-model", "H200", "--expect-count", "2"])
    assert rc == 1
    assert "exit=1" in (EVIDENCE / "gpu-check-expect2.txt").read_text()
