"""pyinfra facts for GPU hosts: thin wrappers around the pure parsers in r1deploy.gpu.nvidia (NVIDIA),
r1deploy.gpu.amd (AMD), r1deploy.gpu.health, r1deploy.gpu.allreduce and r1deploy.gpu.vendor.

Every probe command exits 0 and prints a marker when its binary is missing, so a host with no
GPU, no driver or a broken driver gives a fact value that says so instead of failing the host.
Try them on any host: `pyinfra @local fact r1deploy.roles.gpu_host.facts.Gpus` (from the repo root).
"""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase
from r1deploy.roles._gpus import Gpus, _text  # noqa: F401 (Gpus: one of this stage's facts, kept below it for roles/_plan.py)

from r1deploy.gpu import allreduce, amd, dpkg
from r1deploy.gpu import health as gpu_health
from r1deploy.gpu import nvidia as gpu
from r1deploy.gpu import vendor as gpu_vendor


class LoadedDriver(FactBase):
    """The NVIDIA kernel module running now (/proc/driver/nvidia/version): version, open or not.
    simulated=True (lab hosts only, gpu_simulation) reads the SIMULATION's boot-time file first
    where the lab's switch file exists (gpu.SIM_SWITCH)."""

    def command(self, simulated: bool = False) -> str:
        return gpu.probe("proc_version", simulated)

    @staticmethod
    def default():
        return gpu.LoadedDriver(None)

    def process(self, output):
        return gpu.parse_proc_version(_text(output))


class GpuHealth(FactBase):
    """nvidia-smi -q: ECC, retired pages, row remapper and NVLink fabric state per GPU."""

    def command(self) -> str:
        return gpu.PROBES["smi_q"][1]

    @staticmethod
    def default():
        return gpu.SmiReport("no-driver")

    def process(self, output):
        return gpu.parse_smi_q(_text(output))


class GpuTopology(FactBase):
    """nvidia-smi topo -m: GPU-to-GPU links (NV# or PCIe path kinds)."""

    def command(self) -> str:
        return gpu.PROBES["topo"][1]

    @staticmethod
    def default():
        return gpu.Topology("no-driver")

    def process(self, output):
        return gpu.parse_topo(_text(output))


class NvLinkStatus(FactBase):
    """nvidia-smi nvlink -s: GPU index -> link -> speed or <inactive>."""

    def command(self) -> str:
        return gpu.PROBES["nvlink"][1]

    @staticmethod
    def default():
        return {}

    def process(self, output):
        return gpu.parse_nvlink_status(_text(output))


class NvSwitches(FactBase):
    """How many NVSwitch chips this host has (0 on PCIe cards and VMs without them; None: no PCI
    listing to tell, see r1deploy.gpu.nvidia.parse_nvswitch_count)."""

    def command(self, simulated: bool = False) -> str:
        return gpu.probe("nvswitch", simulated)

    @staticmethod
    def default():
        return 0

    def process(self, output):
        return gpu.parse_nvswitch_count(_text(output))


class FabricManagerState(FactBase):
    """`systemctl is-active nvidia-fabricmanager`, or "no-systemd"."""

    def command(self) -> str:
        return gpu.PROBES["fabricmanager"][1]

    @staticmethod
    def default():
        return "unknown"

    def process(self, output):
        return gpu.parse_fabricmanager(_text(output))


class DcgmDiag(FactBase):
    """DCGM's quick diagnostic (`dcgmi diag -r 1`): (ok, detail); ok None without dcgmi."""

    def command(self) -> str:
        return gpu.PROBES["dcgm"][1]

    @staticmethod
    def default():
        return (None, "no output")

    def process(self, output):
        return gpu.parse_dcgm_diag(_text(output))


_SPLIT = "R1DEPLOY_NVCC"


class CudaStack(FactBase):
    """CUDA runtime / NCCL sonames the linker sees and the nvcc release, if any."""

    def command(self) -> str:
        return f"{gpu.PROBES['ldconfig'][1]}; echo {_SPLIT}; {gpu.PROBES['nvcc'][1]}"

    @staticmethod
    def default():
        return gpu.CudaStack(None, None, None)

    def process(self, output):
        ldconfig, _, nvcc = _text(output).partition(_SPLIT)
        return gpu.parse_cuda_stack(ldconfig, nvcc)


NVIDIA_PATTERNS = ("nvidia-*", "libnvidia-*", "libnccl*", "cuda-*", "datacenter-gpu-manager*")


def _dpkg(patterns: tuple[str, ...]) -> str:
    quoted = " ".join(shlex.quote(p) for p in patterns)
    return f"dpkg-query -W -f='${{db:Status-Abbrev}}|${{Package}}|${{Version}}\\n' {quoted} 2>/dev/null || true"


class NvidiaPackages(FactBase):
    """Installed NVIDIA/CUDA/NCCL/DCGM packages: name -> (version, held by apt-mark)."""

    def command(self) -> str:
        return _dpkg(NVIDIA_PATTERNS)

    @staticmethod
    def default():
        return {}

    def process(self, output):
        return dpkg.parse_dpkg_packages(_text(output))


class AptVersions(FactBase):
    """Versions the configured apt repositories offer: package -> [version, newest first]."""

    def command(self, packages) -> str:
        return f"apt-cache madison {' '.join(shlex.quote(p) for p in packages)} 2>/dev/null || true"

    @staticmethod
    def default():
        return {}

    def process(self, output):
        return dpkg.parse_madison(_text(output))


class BootId(FactBase):
    """This boot's random id: changes on every boot, also in containers (unlike uptime)."""

    def command(self) -> str:
        return "cat /proc/sys/kernel/random/boot_id"

    def process(self, output):
        return output[0].strip() if output else None


class GpuVitals(FactBase):
    """nvidia-smi -q: PCIe link, temperature, power, throttling, volatile ECC per GPU (None: unusable)."""

    def command(self) -> str:
        return gpu.PROBES["smi_q"][1]

    @staticmethod
    def default():
        return None

    def process(self, output):
        return gpu_health.vitals(_text(output))


class KernelLog(FactBase):
    """The kernel's messages since this boot, as text (the gate looks for XIDs / RAS events)."""

    def command(self, simulated: bool = False) -> str:
        return gpu.probe("kernel_log", simulated)

    @staticmethod
    def default():
        return ""

    def process(self, output):
        return _text(output)


class AllReduce(FactBase):
    """NCCL/RCCL all-reduce across all GPUs of the host with `python` (torch), bounded in time."""

    def command(self, python: str) -> str:
        return allreduce.command(python)

    @staticmethod
    def default():
        return {"error": "no output"}

    def process(self, output):
        return allreduce.parse(_text(output))


class PciGpus(FactBase):
    """GPU-class PCI devices by vendor ("nvidia" / "amd" -> bus ids), from /sys/bus/pci."""

    def command(self) -> str:
        return gpu_vendor.PROBE

    @staticmethod
    def default():
        return {}

    def process(self, output):
        return gpu_vendor.parse_pci(_text(output))


AMD_PATTERNS = ("amdgpu-*", "amd-smi-lib", "rocm-*", "rocm")


class AmdPackages(FactBase):
    """Installed amdgpu/ROCm packages: name -> (version, held by apt-mark)."""

    def command(self) -> str:
        return _dpkg(AMD_PATTERNS)

    @staticmethod
    def default():
        return {}

    def process(self, output):
        return dpkg.parse_dpkg_packages(_text(output))


class AmdSmi(FactBase):
    """The raw output of one AMD probe (r1deploy.gpu.amd.PROBES: static, metric, list, xgmi,
    rocm_smi, module); the gate parses it. simulated: as LoadedDriver's."""

    def command(self, probe: str, simulated: bool = False) -> str:
        return amd.probe(probe, simulated)

    @staticmethod
    def default():
        return ""

    def process(self, output):
        return _text(output)


class UserGroups(FactBase):
    """The groups `user` is in (None: no such user)."""

    def command(self, user: str) -> str:
        return f"id -nG {shlex.quote(user)} 2>/dev/null || echo R1DEPLOY_NO_USER"

    @staticmethod
    def default():
        return None

    def process(self, output):
        text = " ".join(output).strip()
        return None if not text or text == "R1DEPLOY_NO_USER" else text.split()
