"""The verification gate and `r1deploy gpu-check` on recorded and hand-made host outputs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from r1deploy.cli import main
from r1deploy.gpu import gate as gpu_gate

FIX = Path(__file__).parent / "fixtures" / "gpu-hosts"
H200 = gpu_gate.Expectations(model="NVIDIA H200", min_memory_mib=140000, driver_branch="580",
                             open_kernel_modules=True)


def gate(folder: str, **expect) -> list[gpu_gate.Check]:
    exp = gpu_gate.Expectations(**{**H200.__dict__, **expect})
    obs = gpu_gate.Observation.from_outputs(gpu_gate.outputs_from_dir(FIX / folder))
    return gpu_gate.run_gate(folder, obs, exp)


def failed(checks) -> set[str]:
    return {c.check for c in checks if c.ok is False}


@pytest.mark.parametrize("folder,count", [
    ("h200x1-ubuntu2404", 1), ("h200x2-nvlink-ubuntu2404", 2), ("hgx8-nvswitch-ubuntu2204-handmade", 8)])
def test_healthy_hosts_pass(folder, count):
    checks = gate(folder, count=count)
    assert gpu_gate.exit_code(checks) == 0, gpu_gate.render_table(checks)


@pytest.mark.parametrize("folder,expect,bad", [
    ("hgx8-nvswitch-gpu-missing-handmade", {"count": 8}, {"gpu-count"}),
    ("hgx8-nvswitch-fm-down-handmade", {}, {"fabric", "fabric-manager"}),
    ("hgx8-retired-pages-handmade", {}, {"memory-health", "nvlink"}),
    ("pcie4-h100-debian12-handmade", {"min_memory_mib": 80000}, {"gpu-model"}),
    ("smi-failed-handmade", {}, {"nvidia-smi", "driver"}),
    ("no-driver-handmade", {}, {"nvidia-smi", "driver"}),
    ("no-gpu-handmade", {}, {"nvidia-smi"}),
    ("old-driver-570-proprietary-handmade", {}, {"driver"}),
    ("h200x1-ubuntu2404", {"driver_version": "580.126.09"}, {"driver"}),
    ("h200x1-ubuntu2404", {"min_memory_mib": 200000}, {"gpu-memory"}),
])
def test_unfit_hosts_fail_with_the_right_checks(folder, expect, bad):
    checks = gate(folder, **expect)
    assert failed(checks) == bad, gpu_gate.render_table(checks)
    assert gpu_gate.exit_code(checks) == 1


def test_pcie_cards_need_no_fabric_manager():
    checks = {c.check: c for c in gate("pcie4-h100-debian12-handmade", model="H100 PCIe", count=4,
                                       min_memory_mib=80000)}
    assert checks["fabric-manager"].ok and "no NVSwitch" in checks["fabric-manager"].detail
    assert checks["fabric"].ok and all(c.ok for c in checks.values())


def test_fabric_manager_forced_but_unknown_is_could_not_check(tmp_path):
    for name in ("query-gpu.csv", "proc-driver-version.txt", "nvidia-smi-q.txt"):
        (tmp_path / name).write_text((FIX / "h200x1-ubuntu2404" / name).read_text())
    (tmp_path / "fabricmanager.txt").write_text("R1DEPLOY_NO_SYSTEMD\n")
    obs = gpu_gate.Observation.from_outputs(gpu_gate.outputs_from_dir(tmp_path))
    checks = gpu_gate.run_gate("vm", obs, gpu_gate.Expectations(fabric_manager="yes"))
    assert gpu_gate.exit_code(checks) == 2
    assert [c.check for c in checks if c.ok is None] == ["fabric-manager"]


def test_nothing_captured_is_could_not_check(tmp_path):
    checks = gpu_gate.run_gate("h", gpu_gate.Observation.from_outputs(gpu_gate.outputs_from_dir(tmp_path)), H200)
    assert gpu_gate.exit_code(checks) == 2


def test_json_records_are_stable():
    records = json.loads(gpu_gate.to_json(gate("h200x1-ubuntu2404", count=1)))
    assert records[0] == {"host": "h200x1-ubuntu2404", "check": "nvidia-smi", "ok": True, "detail": "1 GPU(s) listed"}
    assert all(set(r) == {"host", "check", "ok", "detail"} for r in records)


def test_cli_from_dir_exit_codes(capsys):
    ok = ["gpu-check", "--from-dir", str(FIX / "h200x1-ubuntu2404"), "--expect-model", "H200",
          "--expect-count", "1", "--driver-branch", "580"]
    assert main(ok) == 0
    assert "h200x1-ubuntu2404: PASS" in capsys.readouterr().out
    assert main([*ok[:-4], "--expect-count", "2", "--json"]) == 1
    records = json.loads(capsys.readouterr().out)
    assert [r["check"] for r in records if r["ok"] is False] == ["gpu-count"]


def test_cli_expectations_from_inventory(tmp_path, capsys):
    inv = tmp_path / "inv.py"
    inv.write_text(
        "gpus = [('h200-a', {'gpu_expected_model': 'NVIDIA H200', 'gpu_expected_count': 2,"
        " 'gpu_min_memory_mib': 140000, 'model_repo_id': 'deepseek-ai/DeepSeek-R1',"
        " 'model_revision': '" + "a" * 40 + "', 'fleet_firewall': False})]\n")
    argv = ["gpu-check", "--inventory", str(inv), "--host", "h200-a", "--from-dir"]
    # the spec's deep gate reads the kernel log: the recording plus a hand-made clean one
    assert main([*argv, str(FIX / "h200x2-clean-log-handmade")]) == 0
    assert main([*argv, str(FIX / "h200x2-nvlink-ubuntu2404")]) == 2  # no kernel log recorded
    assert main([*argv, str(FIX / "h200x1-ubuntu2404")]) == 1
    assert "1 GPU(s), expected 2" in capsys.readouterr().out


def test_cli_runs_locally_without_gpus():
    # This machine has no NVIDIA driver: the real probes run and the gate says so (exit 1).
    done = subprocess.run([sys.executable, "-m", "r1deploy", "gpu-check", "--json"], capture_output=True, text=True)
    records = json.loads(done.stdout)
    assert done.returncode == 1 and records[0]["check"] == "nvidia-smi" and records[0]["ok"] is False


def test_dcgm_check_only_when_asked(tmp_path):
    for name in ("query-gpu.csv", "proc-driver-version.txt", "nvidia-smi-q.txt"):
        (tmp_path / name).write_text((FIX / "h200x1-ubuntu2404" / name).read_text())
    obs = gpu_gate.Observation.from_outputs(gpu_gate.outputs_from_dir(tmp_path))
    assert "dcgm" not in {c.check for c in gpu_gate.run_gate("h", obs, H200)}
    with_dcgm = gpu_gate.Expectations(**{**H200.__dict__, "dcgm": True})
    assert gpu_gate.exit_code(gpu_gate.run_gate("h", obs, with_dcgm)) == 2  # asked for, not captured
    (tmp_path / "dcgm-diag.txt").write_text("| Software | Pass |\n")
    obs = gpu_gate.Observation.from_outputs(gpu_gate.outputs_from_dir(tmp_path))
    assert gpu_gate.exit_code(gpu_gate.run_gate("h", obs, with_dcgm)) == 0


def test_save_dir_writes_fixture_layout_and_verdict(tmp_path):
    out = tmp_path / "evidence"
    assert main(["gpu-check", "--from-dir", str(FIX / "h200x2-nvlink-ubuntu2404"), "--save-dir", str(out)]) == 0
    assert (out / "query-gpu.csv").read_text() == (FIX / "h200x2-nvlink-ubuntu2404" / "query-gpu.csv").read_text()
    assert json.loads((out / "gate.json").read_text())[0]["check"] == "nvidia-smi"
    # saved evidence reads back as a fixture
    assert main(["gpu-check", "--from-dir", str(out), "--expect-count", "2"]) == 0


def test_standalone_gate_needs_only_the_standard_library():
    # -S: no site-packages at all, as on a bare GPU host before any wheel is installed
    done = subprocess.run([sys.executable, "-S", "-m", "r1deploy.gpu.gate", "--from-dir",
                           str(FIX / "h200x1-ubuntu2404"), "--expect-count", "1", "--json"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert {r["check"] for r in json.loads(done.stdout)} >= {"gpu-count", "driver", "memory-health"}


def test_issue21_item12_an_nvswitch_probe_that_could_not_run_is_never_no_switch(tmp_path):
    """The recorded HGX host with fabric manager down, probed where neither lspci nor sysfs could
    list PCI devices: before, the empty probe read "0 switches" and fabric manager "not required"."""
    from r1deploy.gpu import nvidia

    for source in (FIX / "hgx8-nvswitch-fm-down-handmade").iterdir():
        (tmp_path / source.name).write_text(source.read_text())
    (tmp_path / "nvswitch.txt").write_text(nvidia.NO_PCI_LISTING + "\n")
    obs = gpu_gate.Observation.from_outputs(gpu_gate.outputs_from_dir(tmp_path))
    assert obs.nvswitches is None
    fm = next(c for c in gpu_gate.run_gate("hgx", obs, gpu_gate.Expectations()) if c.check == "fabric-manager")
    assert fm.ok is None and "could not tell whether this host has NVSwitches" in fm.detail
    # What the probe reads: sysfs and lspci name one chip once; /dev nodes alone count too.
    assert nvidia.parse_nvswitch_count("0000:05:00.0 0680: sysfs\n05:00.0 0680: 10de:22a3 (rev a1)\n") == 1
    assert nvidia.parse_nvswitch_count("/dev/nvidia-nvswitch0\n/dev/nvidia-nvswitch1\n" + nvidia.NO_PCI_LISTING) == 2
    assert nvidia.parse_nvswitch_count("") == 0  # a listing that found none (and the old recordings)


def test_issue21_item12_the_probe_says_when_it_had_no_pci_listing():
    from r1deploy.gpu import nvidia

    probe = nvidia.probe("nvswitch")
    blind = probe.replace("/sys/bus/pci/devices", "/nonexistent/pci").replace("command -v lspci", "false")
    out = subprocess.run(["sh", "-c", blind], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and nvidia.parse_nvswitch_count(out.stdout) is None
    here = subprocess.run(["sh", "-c", probe], capture_output=True, text=True, timeout=30)
    assert here.returncode == 0 and here.stderr == ""
