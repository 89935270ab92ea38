"""GPU host, AMD Instinct: AMD's apt repositories (amdgpu + ROCm), amdgpu-dkms and the
management tools pinned and held, the service user in render/video, a reboot only when the
loaded amdgpu module is not the one the installed amdgpu-dkms builds, then the gate.

vLLM on ROCm: the official ROCm vLLM container (AMD's `rocm/vllm` image), run by podman as
the systemd service (r1deploy/serving/rocm_vllm.py builds its ExecStart), not wheels. Why: vLLM
publishes no ROCm wheels on PyPI (its ROCm install page offers a source build or the
container), and AMD validates and documents the container for MI300X (ROCm docs, "vLLM
inference"); the image pins a matching ROCm user space, torch, triton and AITER, so the host
needs only the kernel driver and amd-smi. A source build per host would need the full ROCm
SDK (~20 GB) and an hour of compiling per vLLM version.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.facts.server import KernelVersion
from pyinfra.operations import apt, files
from r1deploy.roles._rollout import track
from r1deploy.roles.gpu_host import drain, facts
from r1deploy.roles.gpu_host.ops import host_platform, pinned_packages, reboot_into_amdgpu, user_in_groups
from r1deploy.roles.gpu_host.rocm_platforms import (
    DRIVER,
    GROUPS,
    KEYRING,
    TOOLS,
    RocmPlatform,
    repo_pin,
    rocm_platform_for,
)
from r1deploy.roles.gpu_host.versions import Want

from r1deploy.gpu import amd

PIN_DIR = "/etc/apt/preferences.d"
SOURCES_FILE = "/etc/apt/sources.list.d/rocm.list"
REPO_PIN = f"{PIN_DIR}/rocm-pin-600"


def driver_want(g) -> Want:
    """AMD writes the ROCm release into every package version ("...60401-..."): pin by it."""
    return Want(DRIVER, pattern=rf"\.{amd.rocm_code(g.amdgpu_version or g.rocm_version)}-")


def _repository(platform: RocmPlatform, g) -> None:
    key = track(files.download(name="AMD ROCm signing key", src=platform.key_url(g.rocm_repo_url),
                               dest=KEYRING, mode="644"))
    changed = [key,
               files.put(name="amdgpu + ROCm apt repositories", src=StringIO(platform.sources(
                   g.rocm_repo_url, g.rocm_version, g.amdgpu_version)), dest=SOURCES_FILE, mode="644"),
               files.put(name="AMD repository pin (rocm-pin-600)", src=StringIO(repo_pin()), dest=REPO_PIN,
                         mode="644")]
    available = host.get_fact(facts.AptVersions, packages=[DRIVER, *TOOLS])
    installed = {n: v for n, (v, _) in host.get_fact(facts.AmdPackages).items()}
    want = driver_want(g)
    listed = want.pick(available.get(DRIVER, []), installed.get(DRIVER))
    if not listed or any(op.will_change for op in changed):
        apt.update(name="apt update (AMD repositories changed or the pinned release is not listed)")
    track(*changed[1:])


def amd_host(spec, gate: tuple | None = None) -> None:
    g = spec.gpu
    platform: RocmPlatform = host_platform(rocm_platform_for, "AMD GPU hosts", "Ubuntu 22.04/24.04")
    _repository(platform, g)
    track(apt.packages(name="Kernel headers and extra modules for amdgpu-dkms",
                       packages=platform.kernel_packages(host.get_fact(KernelVersion))))
    code = amd.rocm_code(g.rocm_version)
    track(pinned_packages(name=f"amdgpu-dkms for ROCm {g.amdgpu_version or g.rocm_version}", packages=[DRIVER],
                          want=driver_want(g), pin_file=f"{PIN_DIR}/r1deploy-amdgpu",
                          why="the amdgpu driver moves only when the spec says so", installed_fact=facts.AmdPackages))
    for tool in TOOLS:
        track(pinned_packages(name=f"{tool} of ROCm {g.rocm_version}", packages=[tool],
                              want=Want(tool, pattern=rf"\.{code}-"), pin_file=f"{PIN_DIR}/r1deploy-{tool}",
                              why=f"the management tools of ROCm {g.rocm_version}", installed_fact=facts.AmdPackages))
    track(user_in_groups(name=f"{spec.vllm.user} in {', '.join(GROUPS)}", user=spec.vllm.user, groups=GROUPS))
    drain.in_batches(reboot_into_amdgpu, "Reboot into the installed amdgpu if needed", want=driver_want(g),
                     allow_reboot=g.allow_reboot, simulated=g.simulation, gate=gate)
