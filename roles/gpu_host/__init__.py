"""GPU host, by vendor (gpu_vendor, or auto from the PCI vendor ids the host has):

- NVIDIA (here): NVIDIA's CUDA apt repository, a pinned and held driver (names from NVIDIA's
  installation guide, nvidia_names.py), NCCL, fabric manager on NVSwitch boards, persistence
  daemon, optional CUDA toolkit and DCGM;
- AMD (amd.py): AMD's amdgpu + ROCm repositories, amdgpu-dkms and amd-smi pinned and held,
  render/video groups;
then a reboot only when the loaded kernel module is not the installed driver, and the
verification gate (r1deploy.gpu.gate / r1deploy.gpu.amd_gate, deep checks and all-reduce).

Host data: the spec's `gpu_*` keys (r1deploy.spec.GpuSection). Facts: r1deploy.roles.gpu_host.facts
plus pyinfra's LinuxDistribution, KernelVersion, DebPackages, File/Sha1File, Systemd*.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import KernelVersion
from pyinfra.operations import apt, files, server, systemd
from r1deploy.roles._rollout import track
from r1deploy.roles._spec import host_spec
from r1deploy.roles.gpu_host import drain, facts, nvidia_names
from r1deploy.roles.gpu_host.ops import host_platform, pinned_packages, reboot_into_driver, verify_gpus
from r1deploy.roles.gpu_host.platforms import (
    BRANCH_CUDA_MAJOR,
    KEYRING_DEB,
    KEYRING_PACKAGE,
    Platform,
    platform_for,
)
from r1deploy.roles.gpu_host.versions import VersionSkew, Want, follow

from r1deploy.gpu import vendor as gpu_vendor
from r1deploy.gpu.gate import Expectations
from r1deploy.planner.catalog import find_gpu
from r1deploy.spec import GpuSection, split_host_data

PIN_DIR = "/etc/apt/preferences.d"
NOUVEAU_CONF = "/etc/modprobe.d/blacklist-nouveau.conf"
NOUVEAU = "# Managed by r1deploy: the NVIDIA driver needs nouveau out of the way.\nblacklist nouveau\noptions nouveau modeset=0\n"
PERSISTENCED_DROPIN = "/etc/systemd/system/nvidia-persistenced.service.d/r1deploy.conf"
# As NVIDIA's own driver role: root, persistence mode on (the packaged unit may not enable it).
PERSISTENCED = ("[Service]\nExecStart=\nExecStart=/usr/bin/nvidia-persistenced --user root "
                "--persistence-mode --verbose\n")
STALE_DRIVER = re.compile(nvidia_names.STALE_DRIVER)
STALE_FM = re.compile(nvidia_names.STALE_FABRICMANAGER)


@dataclass(frozen=True)
class Plan:
    platform: Platform
    driver: list[str]
    driver_want: Want
    cuda_major: str
    fabric_manager: str | None
    nccl_want: Want


def _plan(g, platform: Platform) -> Plan:
    if g.driver_version and not g.driver_version.startswith(f"{g.driver_branch}."):
        raise DeployError(f"gpu_driver_version {g.driver_version} is not on gpu_driver_branch {g.driver_branch}")
    major = g.cuda_toolkit_version.split(".")[0] if g.cuda_toolkit_version else BRANCH_CUDA_MAJOR.get(g.driver_branch)
    if major is None:
        raise DeployError(f"no known CUDA major for driver branch {g.driver_branch}: set gpu_cuda_toolkit_version")
    driver = platform.driver_packages(g.driver_branch, g.open_kernel_modules)
    switches = host.get_fact(facts.NvSwitches, simulated=g.simulation) if g.fabric_manager == "auto" else 0
    if switches is None:
        raise DeployError(f"{host.name}: cannot tell whether this host has NVSwitches (no lspci, no /sys/bus/pci): "
                          "set gpu_fabric_manager = yes or no")
    wants_fm = g.fabric_manager == "yes" or switches > 0
    return Plan(platform, driver, Want(driver[0], upstream=g.driver_version, prefix=f"{g.driver_branch}."),
                major, platform.fabricmanager_package(g.driver_branch) if wants_fm else None,
                Want(platform.nccl_packages()[0], upstream=g.nccl_version, pattern=rf"\+cuda{major}\.\d+$"))


def _resolvable(plan: Plan) -> bool:
    """Whether the host's apt lists already hold every version we pin (else refresh them:
    a version the spec names may be newer than the host's last `apt update`)."""
    names = [plan.driver[0], plan.nccl_want.package, *([plan.fabric_manager] if plan.fabric_manager else [])]
    available = host.get_fact(facts.AptVersions, packages=sorted(names))
    installed = {name: version for name, (version, _) in host.get_fact(facts.NvidiaPackages).items()}

    def pick(want: Want) -> str | None:
        return want.pick(available.get(want.package, []), installed.get(want.package))

    driver = pick(plan.driver_want)
    if driver is None or pick(plan.nccl_want) is None:
        return False
    if plan.fabric_manager:
        try:
            follow(Want(plan.fabric_manager), driver, available.get(plan.fabric_manager, []),
                   installed.get(plan.fabric_manager))
        except VersionSkew:
            return False
    return True


def _repository(platform: Platform, g, refresh: bool) -> None:
    """cuda-keyring (NVIDIA's signing key) and the repository line, at the spec's base URL;
    apt update when they change or the lists lack a version we pin."""
    installed = host.get_fact(facts.NvidiaPackages)
    changed = []
    if KEYRING_PACKAGE not in installed:
        changed.append(apt.deb(name="Install cuda-keyring", src=platform.repo_url(g.cuda_repo_url) + KEYRING_DEB))
    changed.append(files.put(name="CUDA apt repository", src=StringIO(platform.sources_line(g.cuda_repo_url)),
                             dest=platform.sources_file(), user="root", group="root", mode="644"))
    if refresh or any(op.will_change for op in changed):
        apt.update(name="apt update (CUDA repository changed or a pinned version is not listed)")
    track(*changed)


def _nouveau(platform: Platform) -> None:
    blacklist = track(files.put(name="Blacklist nouveau", src=StringIO(NOUVEAU), dest=NOUVEAU_CONF,
                                user="root", group="root", mode="644"))
    if blacklist.will_change:
        server.shell(name="Rebuild initramfs without nouveau", commands=[platform.initramfs_update])


def _fm_skew_early(plan: Plan) -> None:
    """Fail before touching the host when fabric manager cannot equal the driver version."""
    fm = plan.fabric_manager
    available = host.get_fact(facts.AptVersions, packages=sorted([plan.driver[0], fm]))
    installed = host.get_fact(facts.NvidiaPackages)
    current = installed.get(fm, (None,))[0]
    leader = plan.driver_want.pick(available.get(plan.driver[0], []),
                                   installed.get(plan.driver[0], (None,))[0])
    if leader and (available.get(fm) or current):
        try:
            follow(Want(fm), leader, available.get(fm, []), current)
        except VersionSkew as exc:
            raise DeployError(f"{host.name}: {exc}") from None


def _packages(plan: Plan, g) -> None:
    installed = host.get_fact(facts.NvidiaPackages)
    # pciutils: lspci, one of the GPU gate's NVSwitch probes (r1deploy.gpu.nvidia PROBES).
    track(apt.packages(name="Kernel headers for the driver's DKMS build; pciutils",
                       packages=[f"linux-headers-{host.get_fact(KernelVersion)}", "dkms", "pciutils"]))
    stale = [p for p in installed if STALE_DRIVER.match(p) and p not in plan.driver]
    track(pinned_packages(name=f"NVIDIA driver {plan.driver_want.describe()}", packages=plan.driver,
                          want=plan.driver_want, pin_file=f"{PIN_DIR}/r1deploy-nvidia-driver",
                          why="the NVIDIA driver moves only when the spec says so", remove=stale,
                          follower=plan.fabric_manager))
    if plan.fabric_manager:
        stale_fm = [p for p in installed if STALE_FM.match(p) and p != plan.fabric_manager]
        track(pinned_packages(name=f"{plan.fabric_manager} = driver version", packages=[plan.fabric_manager],
                              want=Want(plan.fabric_manager), leader=plan.driver_want,
                              pin_file=f"{PIN_DIR}/r1deploy-nvidia-fabricmanager",
                              why="fabric manager must equal the driver version exactly", remove=stale_fm))
    track(pinned_packages(name=f"NCCL for CUDA {plan.cuda_major}", packages=plan.platform.nccl_packages(),
                          want=plan.nccl_want, pin_file=f"{PIN_DIR}/r1deploy-nccl",
                          why=f"NCCL built for CUDA {plan.cuda_major}"))
    optional = []
    if g.cuda_toolkit:
        optional.append(plan.platform.cuda_toolkit_package(g.cuda_toolkit_version or f"{plan.cuda_major}.0"))
    if g.dcgm:
        optional.append(plan.platform.dcgm_package(plan.cuda_major))
    if optional:
        track(apt.packages(name="CUDA toolkit / DCGM", packages=optional))


def _services(plan: Plan, g) -> None:
    dropin = track(files.put(name="nvidia-persistenced as root with persistence mode",
                             src=StringIO(PERSISTENCED), dest=PERSISTENCED_DROPIN, create_remote_dir=True,
                             user="root", group="root", mode="644"))
    track(systemd.service(name="nvidia-persistenced running", service="nvidia-persistenced", running=True,
                          enabled=True, restarted=dropin.will_change, daemon_reload=dropin.will_change))
    if plan.fabric_manager:
        track(systemd.service(name="nvidia-fabricmanager running", service="nvidia-fabricmanager",
                              running=True, enabled=True))
    if g.dcgm:
        track(systemd.service(name="DCGM host engine running", service="nvidia-dcgm", running=True, enabled=True))


def _vendor(g) -> str:
    found = host.get_fact(facts.PciGpus) if g.vendor == "auto" else {}
    vendor, why = gpu_vendor.choose(g.vendor, found)
    if vendor is None:
        raise DeployError(f"{host.name}: {why}")
    return vendor


def _expectations(g, model: str | None = None) -> Expectations:
    """The gate's expectations, with the catalog's interconnect for the all-reduce figure."""
    known = find_gpu(model or g.expected_model or "") if (model or g.expected_model) else None
    return Expectations.from_spec(g, known.interconnect if known else None)


def _allreduce_python(spec) -> str:
    from r1deploy.serving.render import vllm_venv

    return spec.gpu.allreduce_python or f"{vllm_venv(spec)}/bin/python"


@deploy("GPU host")
def gpu_host() -> None:
    spec = host_spec()
    g = spec.gpu
    if not g.manage:
        host.noop("gpu_manage is False: GPU host provisioning skipped")
        return
    vendor = _vendor(g)
    expectations = _expectations(g, spec.plan.gpu)
    gate = (expectations, vendor, g.simulation, _allreduce_python(spec))  # also after a reboot turn
    if vendor == "amd":
        from r1deploy.roles.gpu_host.amd import amd_host

        amd_host(spec, gate)
    else:
        _nvidia_host(g, gate)
    verify_gpus(name="GPU verification gate", expectations=expectations, vendor=vendor,
                simulated=g.simulation, allreduce_python=_allreduce_python(spec))


def _nvidia_host(g, gate: tuple) -> None:
    platform: Platform = host_platform(platform_for, "GPU hosts", "Ubuntu 22.04/24.04 or Debian 12")
    plan = _plan(g, platform)
    if plan.fabric_manager:
        _fm_skew_early(plan)
    _repository(platform, g, refresh=not _resolvable(plan))
    _nouveau(platform)
    _packages(plan, g)
    # A rollout turn per batch of each model (roles/gpu_host/drain.py), gpu_reboot_batch_size replicas.
    services = ("nvidia-persistenced", *(["nvidia-fabricmanager"] if plan.fabric_manager else []))
    drain.in_batches(reboot_into_driver, "Reboot into the installed driver if needed", driver_package=plan.driver[0],
                     expected=plan.driver_want, allow_reboot=g.allow_reboot, simulated=g.simulation,
                     services=services, gate=gate)
    _services(plan, g)


@deploy("GPU verify")
def gpu_verify() -> None:
    """Only the facts and the gate, changing nothing: drift checks, and hosts outside an
    inventory (`pyinfra @local roles/gpu_host/verify.py --data gpu_expected_count=8`).
    Reads only the gpu_* keys, so it needs no model settings."""
    try:
        g = GpuSection.model_validate(split_host_data(host.data.dict()).get("gpu", {}))
    except ValueError as exc:
        raise DeployError(f"{host.name}: gpu_* settings: {exc}") from None
    verify_gpus(name="GPU verification gate", expectations=_expectations(g), vendor=_vendor(g),
                simulated=g.simulation, allreduce_python=g.allreduce_python or "python3")
