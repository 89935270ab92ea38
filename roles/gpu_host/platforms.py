"""Per-OS data for NVIDIA's CUDA apt repository: repo paths and the package names we install.

One table instead of per-OS branches in the role. The driver and fabric manager names come
from roles/gpu_host/nvidia_names.py (NVIDIA's installation guide, source per row); the lab's
simulated repository builds its stubs from its own table (lab/nvidia_names.py), not these.
"""

from __future__ import annotations

from dataclasses import dataclass

from r1deploy.roles.gpu_host.nvidia_names import driver_names

# NVIDIA's public repository; air-gapped fleets point gpu_cuda_repo_url at a mirror of it.
NVIDIA_CUDA_REPO = "https://developer.download.nvidia.com/compute/cuda/repos"
KEYRING_PACKAGE = "cuda-keyring"
KEYRING_DEB = "cuda-keyring_1.1-1_all.deb"
KEYRING_FILE = "/usr/share/keyrings/cuda-archive-keyring.gpg"
ARCH_DIR = "x86_64"

# CUDA major version each driver branch ships with (NCCL builds are per CUDA major).
BRANCH_CUDA_MAJOR = {"535": "12", "550": "12", "560": "12", "565": "12", "570": "12", "575": "12",
                     "580": "13", "590": "13"}


@dataclass(frozen=True)
class Platform:
    key: str  # NVIDIA's repo directory name, e.g. ubuntu2404
    name: str
    # Hosts without initramfs-tools (dracut, containers) have no initramfs of ours to rebuild.
    initramfs_update: str = "if command -v update-initramfs >/dev/null 2>&1; then update-initramfs -u; fi"

    def repo_url(self, base: str | None) -> str:
        return f"{(base or NVIDIA_CUDA_REPO).rstrip('/')}/{self.key}/{ARCH_DIR}/"

    def sources_file(self) -> str:
        # The path cuda-keyring itself writes, so a default URL leaves its file as shipped.
        return f"/etc/apt/sources.list.d/cuda-{self.key}-{ARCH_DIR}.list"

    def sources_line(self, base: str | None) -> str:
        return f"deb [signed-by={KEYRING_FILE}] {self.repo_url(base)} /\n"

    def driver_packages(self, branch: str, open_modules: bool) -> list[str]:
        return [driver_names(self.key, branch, open_modules).driver]

    def fabricmanager_package(self, branch: str) -> str:
        return driver_names(self.key, branch, True).fabricmanager

    def nccl_packages(self) -> list[str]:
        return ["libnccl2", "libnccl-dev"]

    def cuda_toolkit_package(self, version: str) -> str:
        major, minor = (version.split(".") + ["0"])[:2]
        return f"cuda-toolkit-{major}-{minor}"

    def dcgm_package(self, cuda_major: str) -> str:
        return f"datacenter-gpu-manager-4-cuda{cuda_major}"


PLATFORMS = {
    ("ubuntu", "22.04"): Platform("ubuntu2204", "Ubuntu 22.04"),
    ("ubuntu", "24.04"): Platform("ubuntu2404", "Ubuntu 24.04"),
    ("debian", "12"): Platform("debian12", "Debian 12"),
}


def platform_for(os_id: str | None, version_id: str | None) -> Platform | None:
    return PLATFORMS.get(((os_id or "").lower(), version_id or ""))
