"""Which GPU vendor a host has, from its PCI devices: pure, no SSH.

Vendors are data: each entry names its PCI vendor id and the spec value; the role maps the
value to its own module (roles/gpu_host/nvidia.py-style functions in roles/gpu_host/__init__.py
and roles/gpu_host/amd.py). Adding a vendor is a row here plus its probe/gate/role files.
"""

from __future__ import annotations

# spec value -> PCI vendor id (/sys/bus/pci/devices/*/vendor)
VENDORS = {"nvidia": "0x10de", "amd": "0x1002"}
# PCI base classes of GPUs: 0x03 display controllers (VGA 0300, 3D 0302, other 0380: H100/H200
# are 0302, MI250X 0380) and 0x12 processing accelerators (MI300X is 1200). NVSwitch bridges
# (0680) and AMD's HD audio (0403) are not GPUs.
GPU_CLASSES = ("0x03", "0x12")
PROBE = ("for d in /sys/bus/pci/devices/*; do [ -r \"$d/vendor\" ] || continue; "
         "printf '%s %s %s\\n' \"${d##*/}\" \"$(cat \"$d/vendor\")\" \"$(cat \"$d/class\")\"; done 2>/dev/null; true")


def parse_pci(text: str) -> dict[str, list[str]]:
    """vendor -> PCI addresses of its GPU-class devices, from PROBE's "addr vendor class" lines."""
    by_id = {pci: name for name, pci in VENDORS.items()}
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        address, vendor, pci_class = parts
        if vendor.lower() in by_id and pci_class.lower().startswith(GPU_CLASSES):
            found.setdefault(by_id[vendor.lower()], []).append(address)
    return found


def choose(wanted: str, found: dict[str, list[str]]) -> tuple[str | None, str]:
    """(vendor, why) for spec value `wanted` (auto | nvidia | amd) and the devices found;
    vendor None when auto cannot decide (no GPU, or both vendors)."""
    if wanted != "auto":
        return wanted, f"gpu_vendor = {wanted}"
    present = sorted(v for v, addresses in found.items() if addresses)
    if len(present) == 1:
        return present[0], f"{len(found[present[0]])} {present[0]} GPU(s) on the PCI bus"
    if not present:
        return None, "no NVIDIA or AMD GPU on the PCI bus: set gpu_vendor"
    return None, f"GPUs of {' and '.join(present)} on one host: set gpu_vendor"
