"""SIMULATION's own copy of NVIDIA's package names, typed from NVIDIA's Driver Installation
Guide, independently of the role's table (roles/gpu_host/nvidia_names.py): the simulated
repository publishes THESE names, so a name the role gets wrong is a package apt cannot find.

Rows, from https://docs.nvidia.com/datacenter/tesla/driver-installation-guide/ ("Kernel
Modules": Open / Proprietary GPU kernel module installation, "Install a specific branch",
Ubuntu and Debian rows; "Version locking" for 590+; fabric manager from the Fabric Manager
user guide's package names): (distro, branch, flavour) -> (driver metapackage, fabric manager).
Do not generate this table from code: write each row out.
"""

from __future__ import annotations

NAMES: dict[tuple[str, str, str], tuple[str, str]] = {
    ("ubuntu2204", "570", "open"): ("nvidia-open-570", "nvidia-fabricmanager-570"),
    ("ubuntu2204", "570", "proprietary"): ("cuda-drivers-570", "nvidia-fabricmanager-570"),
    ("ubuntu2204", "580", "open"): ("nvidia-open-580", "nvidia-fabricmanager-580"),
    ("ubuntu2204", "580", "proprietary"): ("cuda-drivers-580", "nvidia-fabricmanager-580"),
    ("ubuntu2204", "590", "open"): ("nvidia-open", "nvidia-fabricmanager"),
    ("ubuntu2204", "590", "proprietary"): ("cuda-drivers", "nvidia-fabricmanager"),
    ("ubuntu2404", "570", "open"): ("nvidia-open-570", "nvidia-fabricmanager-570"),
    ("ubuntu2404", "570", "proprietary"): ("cuda-drivers-570", "nvidia-fabricmanager-570"),
    ("ubuntu2404", "580", "open"): ("nvidia-open-580", "nvidia-fabricmanager-580"),
    ("ubuntu2404", "580", "proprietary"): ("cuda-drivers-580", "nvidia-fabricmanager-580"),
    ("ubuntu2404", "590", "open"): ("nvidia-open", "nvidia-fabricmanager"),
    ("ubuntu2404", "590", "proprietary"): ("cuda-drivers", "nvidia-fabricmanager"),
    ("debian12", "570", "open"): ("nvidia-open-570", "nvidia-fabricmanager-570"),
    ("debian12", "570", "proprietary"): ("cuda-drivers-570", "nvidia-fabricmanager-570"),
    ("debian12", "580", "open"): ("nvidia-open-580", "nvidia-fabricmanager-580"),
    ("debian12", "580", "proprietary"): ("cuda-drivers-580", "nvidia-fabricmanager-580"),
    ("debian12", "590", "open"): ("nvidia-open", "nvidia-fabricmanager"),
    ("debian12", "590", "proprietary"): ("cuda-drivers", "nvidia-fabricmanager"),
}
