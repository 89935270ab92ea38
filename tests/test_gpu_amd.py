"""AMD parsers and gate: published AMD outputs (tests/fixtures/amd-hosts/*-published, sources
in their SOURCES files) and hand-made MI300X nodes (*-handmade, make_handmade.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from r1deploy.gpu import amd, amd_gate  # noqa: E402
from r1deploy.gpu import gate as gpu_gate  # noqa: E402
from r1deploy.gpu import vendor as gpu_vendor  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "amd-hosts"
MI300X = gpu_gate.Expectations(model="MI300X", count=8, min_memory_mib=190_000, deep=True)


def gate(folder: str, exp=MI300X, installed="6.10.5"):
    obs = amd_gate.AmdObservation.from_outputs(amd_gate.outputs_from_dir(FIX / folder), installed)
    checks = amd_gate.run_gate(folder, obs, exp)
    return {c.check: c for c in checks}, gpu_gate.exit_code(checks)


def test_published_mi350x_static_text_parses():
    inv = amd.parse_static((FIX / "mi350x-static-published" / "amd-smi-static.txt").read_text())
    (g,) = inv.gpus
    assert (inv.status, g.name, g.bus_id, g.driver_version, g.firmware) == (
        "ok", "AMD Instinct MI350X", "0000:05:00.0", "6.18.3", "00154951")
    assert (g.max_pcie_width, g.max_pcie_speed_gts) == (16, 32.0)
    assert g.ecc_enabled is None  # RAS schemas are capabilities, not the ECC state


def test_published_rocm_smi_json_parses():
    inv = amd.parse_rocm_smi((FIX / "rocm-smi-rx7900xt-published" / "rocm-smi.json").read_text())
    assert [(g.name, g.memory_mib) for g in inv.gpus] == [("Radeon RX 7900 XT", 20464)]


def test_json_shapes_of_rocm_6_and_7_both_parse():
    one = '{"gpu": 0, "asic": {"market_name": "AMD Instinct MI300X"}, "bus": {"bdf": "0000:05:00.0"}, ' \
          '"vram": {"size": {"value": 196592, "unit": "MB"}}}'
    for text in (f"[{one}]", f'{{"gpu_data": [{one}]}}'):
        (g,) = amd.parse_static(text).gpus
        assert (g.name, g.memory_mib) == ("AMD Instinct MI300X", 196592)


@pytest.mark.parametrize("text,status", [
    ("R1DEPLOY_MISSING amd-smi\n", "no-driver"), ("", "no-driver"),
    ("ERROR:root:Unable to detect any GPU devices, check amdgpu version and module status (sudo modprobe amdgpu)\n",
     "smi-failed"),
    ("[]\n", "no-gpu"),
])
def test_broken_hosts_are_statuses(text, status):
    assert amd.parse_static(text).status == status


def test_healthy_mi300x_node_passes():
    checks, code = gate("mi300x8-ubuntu2404-handmade")
    assert code == 0, checks
    assert checks["xgmi"].detail == "56 XGMI links up"
    assert checks["firmware"].detail == "one firmware on all GPUs: 022.040.003.043.000001"
    assert checks["driver"].detail == "amdgpu 6.10.5 loaded = installed amdgpu-dkms"


@pytest.mark.parametrize("folder,bad", [
    ("mi300x8-gpu-missing-handmade", {"gpu-count"}),
    ("mi300x8-ras-handmade", {"ras", "ras-events"}),
    ("mi300x8-xgmi-down-handmade", {"xgmi"}),
    ("mi300x8-ecc-off-pcie-x8-handmade", {"ecc", "pcie-link"}),
])
def test_unfit_nodes_fail_on_the_right_checks(folder, bad):
    checks, code = gate(folder)
    assert code == 1
    assert {name for name, c in checks.items() if c.ok is False} == bad


def test_a_pending_driver_reboot_fails_the_driver_check():
    checks, _ = gate("mi300x8-ubuntu2404-handmade", installed="6.12.12")
    assert checks["driver"].ok is False and "reboot pending" in checks["driver"].detail


def test_dkms_package_version_to_module_version():
    assert amd.dkms_module_version("1:6.10.5.60401-2164967.24.04") == "6.10.5"
    assert amd.rocm_code("6.4.1") == "60401" and amd.rocm_code("7.0") == "70000"


def test_vendor_from_pci_devices():
    found = gpu_vendor.parse_pci("0000:05:00.0 0x1002 0x120000\n0000:05:00.1 0x1002 0x040300\n"
                                 "0000:c1:00.0 0x1a03 0x030000\n")
    assert found == {"amd": ["0000:05:00.0"]}  # the BMC's VGA (ASPEED 1a03) and HD audio are not GPUs
    assert gpu_vendor.choose("auto", found)[0] == "amd"
    assert gpu_vendor.choose("auto", {}) == (None, "no NVIDIA or AMD GPU on the PCI bus: set gpu_vendor")
    assert gpu_vendor.choose("nvidia", found)[0] == "nvidia"


def test_rocm_nodes_get_the_planners_aiter_env_and_a_pinned_container():
    from r1deploy.serving.render import service_env
    from r1deploy.serving.rocm_vllm import exec_start
    from r1deploy.spec import Spec

    def spec(device, gpu):
        return Spec.model_validate({"model": {"repo_id": "deepseek-ai/DeepSeek-R1", "revision": "a" * 40},
                                    "vllm": {"device": device}, "plan": {"gpu": gpu}})
    assert service_env(spec("rocm", "MI300X"))["VLLM_ROCM_USE_AITER"] == "1"
    assert "VLLM_ROCM_USE_AITER" not in service_env(spec("rocm", "MI250X"))  # CDNA2: no AITER recipe
    assert "VLLM_ROCM_USE_AITER" not in service_env(spec("cuda", "H200"))
    line = exec_start("docker.io/rocm/vllm:tag1", "/etc/r1deploy/current/vllm.env", ["/var/lib/r1deploy"])
    assert "--device=/dev/kfd --device=/dev/dri" in line and line.endswith("docker.io/rocm/vllm:tag1 vllm serve")
    with pytest.raises(ValueError, match="must carry a tag"):
        exec_start("docker.io/rocm/vllm", "/e", [])
