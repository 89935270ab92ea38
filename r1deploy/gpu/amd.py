"""AMD Instinct host state from command output: pure parsers, no SSH, no pyinfra.

`amd-smi` (ROCm 6.x/7.x; its JSON where it has one) and, for hosts with only the older tool,
`rocm-smi --json`. amd-smi's JSON changed shape across releases: a top-level list of GPU
objects (ROCm 6.x) or {"gpu_data": [...]} (ROCm 7); values are numbers, "N/A", strings with
units ("32 GT/s") or {"value": 32, "unit": "GT/s"}. The parsers accept all of them. Like
r1deploy.gpu.nvidia, a missing binary or a broken driver is a status, never an exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from r1deploy.gpu.dpkg import upstream_version
from r1deploy.gpu.nvidia import MISSING, SIM_DIR, SIM_SWITCH, _guarded

# SIMULATION ONLY (lab/rocm_repo.py): SIM_DIR and SIM_SWITCH are the NVIDIA simulation's own.
SIM_AMDGPU_VERSION = f"{SIM_DIR}/amdgpu-version"
MODULE_VERSION = "/sys/module/amdgpu/version"

PROBES: dict[str, tuple[str, str]] = {
    "static": ("amd-smi-static.json", _guarded("amd-smi", "amd-smi static --json")),
    "metric": ("amd-smi-metric.json", _guarded("amd-smi", "amd-smi metric --json")),
    "list": ("amd-smi-list.json", _guarded("amd-smi", "amd-smi list --json")),
    "xgmi": ("amd-smi-xgmi.txt", _guarded("amd-smi", "amd-smi xgmi")),
    "rocm_smi": ("rocm-smi.json", _guarded("rocm-smi", "rocm-smi --showproductname --showmeminfo vram --showbus --json")),
    # The amdgpu module running now (a DKMS build has a version; the kernel's own has none).
    "module": ("amdgpu-module.txt",
               f"if [ -d /sys/module/amdgpu ]; then cat {MODULE_VERSION} 2>/dev/null || echo in-tree; "
               f"else echo {MISSING} amdgpu; fi"),
}
_SIMULATED = {"module": f"{{ [ -f {SIM_SWITCH} ] && cat {SIM_AMDGPU_VERSION} 2>/dev/null; }} || "}


def probe(name: str, simulated: bool = False) -> str:
    command = PROBES[name][1]
    return _SIMULATED[name] + command if simulated and name in _SIMULATED else command


class _Record:
    def to_json(self) -> dict:
        return asdict(self)


def _value(v) -> float | None:
    """A number from 196592, "196592 MB", {"value": 196592, "unit": "MB"}; None for N/A."""
    if isinstance(v, dict):
        v = v.get("value")
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    m = re.match(r"^\s*(-?[0-9.]+)", str(v))
    return float(m.group(1)) if m else None


def _unit(v) -> str:
    if isinstance(v, dict):
        return str(v.get("unit", ""))
    m = re.match(r"^\s*-?[0-9.]+\s*(\S+)", str(v))
    return m.group(1) if m else ""


def _mib(v) -> int | None:
    number = _value(v)
    if number is None:
        return None
    scale = {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "MIB": 1, "GB": 1024, "GIB": 1024}.get(_unit(v).upper(), 1)
    return int(number * scale)


def _gpus(data) -> list[dict]:
    if isinstance(data, dict):
        data = data.get("gpu_data", [])
    return [g for g in data if isinstance(g, dict) and "gpu" in g] if isinstance(data, list) else []


def parse_text_tree(text: str) -> list[dict]:
    """amd-smi's plain output ("GPU: 0" then indented "KEY: value") as the --json shape:
    the JSON keys are the text keys lower-cased (MAX_PCIE_WIDTH -> max_pcie_width)."""
    gpus: list[dict] = []
    stack: list[tuple[int, dict]] = []
    for raw in text.splitlines():
        if not raw.strip() or ":" not in raw:
            continue
        indent = len(raw) - len(raw.lstrip())
        key, _, value = raw.strip().partition(":")
        if indent == 0 and key == "GPU":
            gpus.append({"gpu": int(value.strip())})
            stack = [(0, gpus[-1])]
            continue
        if not stack:
            continue  # lines before the first GPU (warnings)
        while len(stack) > 1 and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if value.strip():
            parent[key.strip().lower()] = value.strip()
        else:
            child: dict = {}
            parent[key.strip().lower()] = child
            stack.append((indent, child))
    return gpus


def _load(text: str):
    """(json, status): status no-driver | smi-failed | unparsable | ok. Plain (non-JSON)
    amd-smi output is read too, so published text outputs serve as fixtures."""
    stripped = text.strip()
    if not stripped or stripped.startswith(MISSING):
        return None, "no-driver"
    if "\nGPU: " in f"\n{stripped}" and not stripped.lstrip().startswith(("[", "{")):
        return parse_text_tree(stripped), "ok"
    start = min([i for i in (stripped.find("["), stripped.find("{")) if i >= 0], default=-1)
    if start < 0:
        return None, "smi-failed"
    try:
        return json.loads(stripped[start:]), "ok"
    except ValueError:
        return None, "unparsable"


# --- amd-smi static ---------------------------------------------------------------------


@dataclass(frozen=True)
class AmdGpu(_Record):
    index: int
    name: str
    bus_id: str
    memory_mib: int | None
    driver_version: str | None
    firmware: str | None  # VBIOS / IFWI version
    max_pcie_width: int | None
    max_pcie_speed_gts: float | None
    ecc_enabled: bool | None  # from the RAS block states / schemas
    max_power_w: float | None
    slowdown_hotspot_c: float | None


@dataclass(frozen=True)
class AmdInventory(_Record):
    status: str  # ok | no-gpu | no-driver | smi-failed | unparsable
    gpus: tuple[AmdGpu, ...] = ()
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _ecc(ras: dict) -> bool | None:
    states = ras.get("ecc_block_state") or {}
    if isinstance(states, dict) and states:
        umc = str(states.get("UMC", states.get("umc", ""))).upper()
        if umc:
            return umc == "ENABLED"
        return any(str(v).upper() == "ENABLED" for v in states.values())
    # The *_SCHEMA fields describe RAS capabilities, not whether ECC is on: no verdict from them.
    return None


def _static_gpu(g: dict) -> AmdGpu:
    asic, bus, vram = g.get("asic") or {}, g.get("bus") or {}, g.get("vram") or {}
    firmware = (g.get("vbios") or g.get("ifwi") or {}).get("version")
    limit = g.get("limit") or {}
    width = _value(bus.get("max_pcie_width"))
    return AmdGpu(
        index=int(g["gpu"]), name=str(asic.get("market_name", "unknown")), bus_id=str(bus.get("bdf", "")),
        memory_mib=_mib(vram.get("size", vram.get("vram_size"))),
        driver_version=(g.get("driver") or {}).get("version"),
        firmware=str(firmware) if firmware not in (None, "N/A") else None,
        max_pcie_width=int(width) if width is not None else None,
        max_pcie_speed_gts=_value(bus.get("max_pcie_speed")),
        ecc_enabled=_ecc(g.get("ras") or {}),
        max_power_w=_value(limit.get("max_power", limit.get("power_cap"))),
        slowdown_hotspot_c=_value(limit.get("slowdown_hotspot_temperature")),
    )


def parse_static(text: str) -> AmdInventory:
    data, status = _load(text)
    if status != "ok":
        return AmdInventory(status, detail=text.strip().splitlines()[0][:200] if text.strip() else "no output")
    try:
        gpus = tuple(_static_gpu(g) for g in _gpus(data))
    except (KeyError, TypeError, ValueError) as exc:
        return AmdInventory("unparsable", detail=str(exc)[:200])
    return AmdInventory("ok" if gpus else "no-gpu", gpus)


# --- amd-smi metric ---------------------------------------------------------------------


@dataclass(frozen=True)
class AmdMetric(_Record):
    index: int
    hotspot_c: float | None
    memory_c: float | None
    socket_power_w: float | None
    power_cap_w: float | None
    pcie_width: int | None
    pcie_speed_gts: float | None
    ecc_uncorrectable: int | None
    ecc_correctable: int | None
    throttle: str | None


def _metric_gpu(g: dict) -> AmdMetric:
    temp, power, pcie = g.get("temperature") or {}, g.get("power") or {}, g.get("pcie") or {}
    ecc = g.get("ecc") or {}
    width = _value(pcie.get("width"))
    unc = _value(ecc.get("total_uncorrectable_count", ecc.get("uncorrectable_count")))
    cor = _value(ecc.get("total_correctable_count", ecc.get("correctable_count")))
    return AmdMetric(
        index=int(g["gpu"]), hotspot_c=_value(temp.get("hotspot")), memory_c=_value(temp.get("mem")),
        socket_power_w=_value(power.get("socket_power")),
        power_cap_w=_value(power.get("power_cap", (g.get("power_cap") or {}).get("value") if isinstance(g.get("power_cap"), dict) else None)),
        pcie_width=int(width) if width is not None else None, pcie_speed_gts=_value(pcie.get("speed")),
        ecc_uncorrectable=int(unc) if unc is not None else None, ecc_correctable=int(cor) if cor is not None else None,
        throttle=power.get("throttle_status"),
    )


def parse_metric(text: str) -> tuple[str, tuple[AmdMetric, ...]]:
    data, status = _load(text)
    if status != "ok":
        return status, ()
    try:
        return "ok", tuple(_metric_gpu(g) for g in _gpus(data))
    except (KeyError, TypeError, ValueError):
        return "unparsable", ()


# --- amd-smi list, xgmi, rocm-smi, the loaded module -------------------------------------


def parse_list(text: str) -> list[dict]:
    data, status = _load(text)
    return _gpus(data) if status == "ok" else []


def parse_xgmi_links(text: str) -> dict[str, list[str]] | None:
    """`amd-smi xgmi` link status rows ("GPU0  0000:0c:00.0  U U U D X ..."): bus id ->
    states (U up, D down, X self/none); None when the table is absent (no XGMI, no tool)."""
    rows: dict[str, list[str]] = {}
    in_status = False
    for line in text.splitlines():
        if "LINK STATUS" in line.upper():
            in_status = True
            continue
        if in_status and (m := re.match(r"^\s*GPU\d+\s+([0-9a-fA-F:.]+)\s+(.*)$", line)):
            states = [t for t in m.group(2).split() if t in ("U", "D", "X")]
            if states:
                rows[m.group(1)] = states
        elif in_status and line.strip() and line.strip().endswith(":"):
            in_status = False
    return rows or None


def parse_rocm_smi(text: str) -> AmdInventory:
    """`rocm-smi --json` (cards by "cardN"): the fallback inventory on hosts without amd-smi."""
    data, status = _load(text)
    if status != "ok" or not isinstance(data, dict):
        return AmdInventory(status if status != "ok" else "unparsable")
    gpus = []
    for key, card in sorted(data.items()):
        if not key.startswith("card") or not isinstance(card, dict):
            continue
        total = card.get("VRAM Total Memory (B)")
        gpus.append(AmdGpu(
            index=int(key[4:]), name=str(card.get("Card Series") or card.get("Device Name") or "unknown"),
            bus_id=str(card.get("PCI Bus", "")), memory_mib=int(int(total) / 2**20) if total else None,
            driver_version=None, firmware=card.get("VBIOS version"), max_pcie_width=None, max_pcie_speed_gts=None,
            ecc_enabled=None, max_power_w=_value(card.get("Max Graphics Package Power (W)")), slowdown_hotspot_c=None))
    return AmdInventory("ok" if gpus else "no-gpu", tuple(gpus))


def parse_module(text: str) -> str | None:
    """The loaded amdgpu version ("6.10.5"), "in-tree" (the kernel's own module), or None."""
    word = (text.strip().splitlines() or [""])[0].strip()
    if not word or word.startswith(MISSING):
        return None
    return word


def dkms_module_version(package_version: str | None) -> str | None:
    """amdgpu-dkms "1:6.10.5.60401-2164967.24.04" builds module version "6.10.5"."""
    if not package_version:
        return None
    upstream = upstream_version(package_version).split(":")[-1]
    return ".".join(upstream.split(".")[:3])


def rocm_code(version: str) -> str:
    """ROCm "6.4.1" as AMD writes it inside package versions: "60401"."""
    parts = (version.split(".") + ["0", "0"])[:3]
    return f"{int(parts[0])}{int(parts[1]):02d}{int(parts[2]):02d}"
