"""Per-OS data for AMD's apt repositories (repo.radeon.com layout) and the packages we install.

Source: AMD's "ROCm installation for Linux", Ubuntu native (package manager) installation,
https://rocm.docs.amd.com/projects/install-on-linux/en/latest/install/install-methods/package-manager/package-manager-ubuntu.html
- key: <base>/rocm/rocm.gpg.key, which AMD dearmors to /etc/apt/keyrings/rocm.gpg; we keep it
  armored as /etc/apt/keyrings/rocm.asc (apt reads armored keys by that extension), so the
  host needs no gpg;
- `deb [arch=amd64 signed-by=/etc/apt/keyrings/rocm.gpg] <base>/amdgpu/<version>/ubuntu <codename> main`
  (the amdgpu-dkms kernel driver) and `... <base>/rocm/apt/<version> <codename> main` (ROCm);
- `/etc/apt/preferences.d/rocm-pin-600`: "Package: * / Pin: release o=repo.radeon.com / Pin-Priority: 600";
- `apt install amdgpu-dkms`, then ROCm; `usermod -a -G render,video <user>`; reboot.
Mirrors keep the same layout below their own base URL (gpu_rocm_repo_url).

Host packages: the driver and the management tools only (amd-smi-lib, rocm-smi-lib). vLLM runs
in AMD's ROCm vLLM container (see roles/gpu_host/amd.py for why), which brings its own ROCm
user space; the host's ROCm must only be new enough for the driver, so the full `rocm`
metapackage (~20 GB) is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass

AMD_REPO = "https://repo.radeon.com"
KEY_PATH = "rocm/rocm.gpg.key"
KEYRING = "/etc/apt/keyrings/rocm.asc"
SOURCE = ("https://rocm.docs.amd.com/projects/install-on-linux/en/latest/install/install-methods/"
          "package-manager/package-manager-ubuntu.html")
DRIVER = "amdgpu-dkms"
TOOLS = ["amd-smi-lib", "rocm-smi-lib"]
GROUPS = ["render", "video"]  # /dev/kfd and /dev/dri/renderD* belong to these


@dataclass(frozen=True)
class RocmPlatform:
    key: str
    name: str
    codename: str

    def base(self, url: str | None) -> str:
        return (url or AMD_REPO).rstrip("/")

    def key_url(self, url: str | None) -> str:
        return f"{self.base(url)}/{KEY_PATH}"

    def sources(self, url: str | None, rocm_version: str, amdgpu_version: str | None) -> str:
        b = self.base(url)
        return (f"deb [arch=amd64 signed-by={KEYRING}] {b}/amdgpu/{amdgpu_version or rocm_version}/ubuntu {self.codename} main\n"
                f"deb [arch=amd64 signed-by={KEYRING}] {b}/rocm/apt/{rocm_version} {self.codename} main\n")

    def kernel_packages(self, kernel: str) -> list[str]:
        # amdgpu-dkms builds against the running kernel's headers and needs its extra modules.
        return [f"linux-headers-{kernel}", f"linux-modules-extra-{kernel}"]


ROCM_PLATFORMS = {
    ("ubuntu", "22.04"): RocmPlatform("ubuntu2204", "Ubuntu 22.04", "jammy"),
    ("ubuntu", "24.04"): RocmPlatform("ubuntu2404", "Ubuntu 24.04", "noble"),
}


def rocm_platform_for(os_id: str | None, version_id: str | None) -> RocmPlatform | None:
    return ROCM_PLATFORMS.get(((os_id or "").lower(), version_id or ""))


ORIGIN = "repo.radeon.com"  # the Origin field of AMD's Release files; a mirror copies it as is


def repo_pin() -> str:
    """AMD's rocm-pin-600: `o=` matches the Release file's Origin, not the URL's host, so it is
    the same for AMD's servers and for mirrors of them."""
    return (f"# Managed by r1deploy (gpu_host, AMD): AMD's packages over the distribution's\n"
            f"Package: *\nPin: release o={ORIGIN}\nPin-Priority: 600\n")
