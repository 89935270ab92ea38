"""Parsers on outputs recorded on real H200 hosts, and on the hand-made variants."""

from pathlib import Path

import pytest

from r1deploy.gpu import dpkg
from r1deploy.gpu import nvidia as gpu

FIX = Path(__file__).parent / "fixtures" / "gpu-hosts"
X1, X2, HGX = FIX / "h200x1-ubuntu2404", FIX / "h200x2-nvlink-ubuntu2404", FIX / "hgx8-nvswitch-ubuntu2204-handmade"


def text(folder: Path, name: str) -> str:
    return (folder / name).read_text()


def test_query_string_is_the_recorded_one():
    assert gpu.QUERY_GPU == (
        "nvidia-smi --query-gpu=index,uuid,name,pci.bus_id,memory.total,memory.used,driver_version,"
        "persistence_mode,compute_mode,temperature.gpu,power.limit,clocks.max.sm,ecc.mode.current,"
        "mig.mode.current --format=csv")
    assert gpu.QUERY_GPU in gpu.PROBES["query_gpu"][1]


def test_query_gpu_recorded_single_h200():
    inv = gpu.parse_query_gpu(text(X1, "query-gpu.csv"))
    assert inv.ok and len(inv.gpus) == 1
    g = inv.gpus[0]
    assert (g.name, g.bus_id, g.memory_total_mib, g.driver_version) == (
        "NVIDIA H200", "00000000:00:06.0", 143771, "580.159.04")
    assert (g.persistence, g.ecc, g.mig, g.power_limit_w, g.max_sm_clock_mhz) == (True, True, False, 700.0, 1980)
    assert g.uuid == "GPU-c0b9eed0-c7d9-df06-1232-faf2b741aae0"
    assert inv.driver_version == "580.159.04"


def test_query_gpu_recorded_two_h200():
    inv = gpu.parse_query_gpu(text(X2, "query-gpu.csv"))
    assert [g.index for g in inv.gpus] == [0, 1]
    assert {g.bus_id for g in inv.gpus} == {"00000000:00:06.0", "00000000:00:07.0"}


@pytest.mark.parametrize("output,status", [
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
     "Make sure that the latest NVIDIA driver is installed and running.\n", "smi-failed"),
    ("No devices were found\n", "no-gpu"),
    (f"{gpu.MISSING} nvidia-smi\n", "no-driver"),
    ("", "no-driver"),
    ("index, uuid\n", "no-gpu"),
    ("Failed to initialize NVML: Driver/library version mismatch\n", "unparsable"),
])
def test_query_gpu_failures_are_values(output, status):
    inv = gpu.parse_query_gpu(output)
    assert inv.status == status and not inv.ok and inv.gpus == ()


def test_proc_version_open_and_proprietary():
    assert gpu.parse_proc_version(text(X1, "proc-driver-version.txt")) == gpu.LoadedDriver("580.159.04", True)
    old = gpu.parse_proc_version(text(FIX / "old-driver-570-proprietary-handmade", "proc-driver-version.txt"))
    assert old == gpu.LoadedDriver("570.195.03", False) and old.branch == "570"
    assert gpu.parse_proc_version(f"{gpu.MISSING} /proc/driver/nvidia/version").version is None


def test_smi_q_health_and_fabric():
    one = gpu.parse_smi_q(text(X1, "nvidia-smi-q.txt"))
    assert (one.status, one.driver_version, one.cuda_version) == ("ok", "580.159.04", "13.0")
    assert one.gpus[0].ecc_current is True and one.gpus[0].fabric_ready is None
    two = gpu.parse_smi_q(text(X2, "nvidia-smi-q.txt"))
    assert [h.fabric_ready for h in two.gpus] == [True, True]
    assert all(h.memory_problems == [] and h.remap_uncorrectable == 0 for h in two.gpus)
    # the ECC / page-retirement / row-remapper only view parses the same way
    assert [h.ecc_current for h in gpu.parse_smi_q(text(X2, "ecc-retire.txt")).gpus] == [True, True]


def test_smi_q_retired_pages_variant():
    report = gpu.parse_smi_q(text(FIX / "hgx8-retired-pages-handmade", "nvidia-smi-q.txt"))
    bad = [h for h in report.gpus if h.memory_problems]
    assert len(report.gpus) == 8 and len(bad) == 1
    assert bad[0].retired_dbe == 2 and bad[0].retirement_pending and bad[0].remap_failure


def test_smi_q_failed():
    assert gpu.parse_smi_q(text(FIX / "smi-failed-handmade", "nvidia-smi-q.txt")).status == "smi-failed"


def test_topology_escapes_and_links():
    single = gpu.parse_topo(text(X1, "topo.txt"))
    assert "\x1b" in text(X1, "topo.txt") and single.gpus == ("GPU0",) and single.interconnect == "single"
    pair = gpu.parse_topo(text(X2, "topo.txt"))
    assert pair.links[("GPU0", "GPU1")] == "NV18" and pair.interconnect == "nvlink"
    hgx = gpu.parse_topo(text(HGX, "topo.txt"))
    assert len(hgx.gpus) == 8 and hgx.nvlink_pairs == 28 and hgx.all_to_all_nvlink
    pcie = gpu.parse_topo(text(FIX / "pcie4-h100-debian12-handmade", "topo.txt"))
    assert pcie.interconnect == "pcie" and pcie.links[("GPU0", "GPU2")] == "SYS"
    assert gpu.parse_topo(text(FIX / "smi-failed-handmade", "topo.txt")).status == "smi-failed"


def test_nvlink_status():
    links = gpu.parse_nvlink_status(text(X2, "nvlink-s.txt"))
    assert sorted(links) == [0, 1] and len(links[0]) == 18 and links[1][17] == "26.562 GB/s"
    assert gpu.inactive_links(links) == []
    bad = gpu.parse_nvlink_status(text(FIX / "hgx8-retired-pages-handmade", "nvlink-s.txt"))
    assert gpu.inactive_links(bad) == ["GPU3 link 5"]


def test_nvswitch_and_fabric_manager():
    assert gpu.parse_nvswitch_count(text(HGX, "nvswitch.txt")) == 4
    assert gpu.parse_nvswitch_count("/dev/nvidia-nvswitchctl\n/dev/nvidia-nvswitch0\n/dev/nvidia-nvswitch1\n") == 2
    assert gpu.parse_nvswitch_count("") == 0
    assert gpu.parse_fabricmanager("active\n") == "active"
    assert gpu.parse_fabricmanager("failed\n") == "failed"
    assert gpu.parse_fabricmanager(gpu.NO_SYSTEMD) == "no-systemd"


def test_cuda_stack_from_ldconfig_and_nvcc():
    stack = gpu.parse_cuda_stack(text(X1, "ldconfig.txt"), text(X1, "nvcc.txt"))
    assert stack == gpu.CudaStack("13", "2", "13.0.88")
    assert gpu.parse_cuda_stack("", "") == gpu.CudaStack(None, None, None)


def test_dpkg_and_madison():
    pkgs = dpkg.parse_dpkg_packages(
        "hi |nvidia-driver-580-open|580.159.04-0ubuntu1\nii |libnccl2|2.28.3-1+cuda13.0\n"
        "rc |nvidia-driver-570|570.195.03-0ubuntu1\n")
    assert pkgs == {"nvidia-driver-580-open": ("580.159.04-0ubuntu1", True), "libnccl2": ("2.28.3-1+cuda13.0", False)}
    madison = dpkg.parse_madison(
        "libnccl2 | 2.28.3-1+cuda13.0 | https://repo/ubuntu2404/x86_64  Packages\n"
        "libnccl2 | 2.27.7-1+cuda12.9 | https://repo/ubuntu2404/x86_64  Packages\n")
    assert madison == {"libnccl2": ["2.28.3-1+cuda13.0", "2.27.7-1+cuda12.9"]}
    assert dpkg.upstream_version("1:580.159.04-1ubuntu1") == "580.159.04"


def test_query_gpu_tolerates_warnings_before_the_header():
    inv = gpu.parse_query_gpu("WARNING: infoROM is corrupted at gpu 0000:00:06.0\n" + text(X1, "query-gpu.csv"))
    assert inv.ok and len(inv.gpus) == 1 and "infoROM" in inv.detail


DIAG = """Successfully ran diagnostic for group.
+---------------------------+------------------------------------------------+
| Diagnostic                | Result                                         |
+===========================+================================================+
|-----  Deployment  --------+------------------------------------------------|
| Denylist                  | Pass                                           |
| NVML Library              | Pass                                           |
| Environment Variables     | Fail - GPU(s) 3                                |
+---------------------------+------------------------------------------------+
"""


def test_dcgm_diag():
    assert gpu.parse_dcgm_diag(DIAG) == (False, "Environment Variables: Fail - GPU(s) 3")
    assert gpu.parse_dcgm_diag(DIAG.replace("Fail - GPU(s) 3", "Pass")) == (True, "3 diagnostic(s) passed")
    assert gpu.parse_dcgm_diag(f"{gpu.MISSING} dcgmi\n") == (None, "dcgmi is not installed")
    ok, detail = gpu.parse_dcgm_diag("Error: unable to establish a connection to the specified host: localhost\n")
    assert ok is False and "unable to establish" in detail
