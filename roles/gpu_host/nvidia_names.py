"""NVIDIA package names per OS and driver branch, as NVIDIA's own documentation gives them.

Source: the NVIDIA Driver Installation Guide (docs.nvidia.com/datacenter/tesla/driver-installation-guide/),
per release: "Kernel Modules" -> table "Open GPU kernel module installation" / "Proprietary GPU
kernel module installation" (columns "Install the latest" / "Install a specific branch") and
"Version locking". For Ubuntu 22.04/24.04 and Debian 12 (NVIDIA's CUDA repository, the same
names on all three):
- up to branch 580: a specific branch is `apt install nvidia-open-<branch>` (open modules) or
  `apt install cuda-drivers-<branch>` (proprietary); fabric manager `nvidia-fabricmanager-<branch>`;
- from 590 on the names are unsuffixed (`nvidia-open`, `cuda-drivers`, `nvidia-fabricmanager`):
  "Recent Updates" -> "Ubuntu 590 and later packages" -> table "Ubuntu 590 package renames"
  (e.g. cuda-drivers-580 "will be removed", nvidia-dkms-580-open -> nvidia-dkms-open); a branch
  is then locked by NVIDIA's pinning package `nvidia-driver-pinning-<branch>` ("Version locking
  packages for Ubuntu / Debian", also published for 580). r1deploy pins an exact version
  itself (apt preferences + apt-mark hold), so it does not install the pinning package; its
  name is kept here for operators who compare with the guide.
The Ubuntu/Debian rows of the kernel-modules tables could not be re-read from the stored
copies of the guide while writing this (those excerpts show the RHEL/Fedora rows); the 590
renames are from the Recent Updates page. Verify against a mirror before relying on a row.
Ubuntu's own archive names (`nvidia-driver-580-open`) are NOT these: hosts converged by an older
r1deploy carry them and the role removes them in the transaction that installs these.

The lab's simulated repository builds its packages from an independent table typed from the
same guide (lab/nvidia_names.py), so a name wrong here fails the lab test instead of agreeing
with itself. Check a row against a mirror before adding an OS: `apt-cache policy <name>`.
"""

from __future__ import annotations

from dataclasses import dataclass

GUIDE = "https://docs.nvidia.com/datacenter/tesla/driver-installation-guide"
SOURCE_580 = f"{GUIDE}/580/kernel-modules.html (Open/Proprietary GPU kernel module installation tables)"
SOURCE_590 = (f"{GUIDE}/recent-updates.html (Ubuntu 590 package renames), "
              f"{GUIDE}/590/kernel-modules.html (unsuffixed names) and "
              f"{GUIDE}/version-locking.html (nvidia-driver-pinning-<branch>)")
FABRIC_MANAGER_GUIDE = "https://docs.nvidia.com/datacenter/tesla/fabric-manager-user-guide/index.html"
FIRST_UNSUFFIXED = 590
OSES = ("ubuntu2204", "ubuntu2404", "debian12")


@dataclass(frozen=True)
class DriverNames:
    driver: str  # the metapackage: kernel module flavour + user space + CUDA libraries
    fabricmanager: str
    branch_lock: str  # NVIDIA's pinning package; r1deploy pins exactly instead
    source: str


def driver_names(os_key: str, branch: str, open_modules: bool) -> DriverNames:
    if os_key not in OSES:
        raise KeyError(f"no NVIDIA package names for {os_key}")
    if int(branch) >= FIRST_UNSUFFIXED:
        return DriverNames("nvidia-open" if open_modules else "cuda-drivers", "nvidia-fabricmanager",
                           f"nvidia-driver-pinning-{branch}", SOURCE_590)
    return DriverNames(f"nvidia-open-{branch}" if open_modules else f"cuda-drivers-{branch}",
                       f"nvidia-fabricmanager-{branch}", f"nvidia-driver-pinning-{branch}", SOURCE_580)


# Names of any branch or flavour, ours or Ubuntu's archive's: what a branch change removes.
STALE_DRIVER = r"^(nvidia-driver-\d+(-open)?|nvidia-open(-\d+)?|cuda-drivers(-\d+)?)$"
STALE_FABRICMANAGER = r"^nvidia-fabricmanager(-\d+)?$"
