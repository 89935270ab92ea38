"""The deeper health of a GPU host, from outputs already probed: pure parsers, no SSH.

- XIDs (NVIDIA) and RAS events (AMD) the kernel logged since this boot;
- PCIe link generation/width against the maximum, temperature and power against their
  limits, throttling, volatile uncorrectable ECC, all from `nvidia-smi -q`.

Each check returns (ok, detail) with ok None when it could not be checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from r1deploy.gpu import nvidia as gpu

# --- kernel log -------------------------------------------------------------------------

# "NVRM: Xid (PCI:0000:3b:00): 79, pid=..., GPU has fallen off the bus."
XID = re.compile(r"NVRM: Xid \(PCI:(?P<bus>[0-9a-fA-F:.]+)\): (?P<xid>\d+)\b[, ]*(?P<text>.*)$")
# XIDs a user program causes (illegal address, MMU fault, a killed context): the hardware is
# still fit, so they are reported, not failed. NVIDIA's XID catalog lists them as
# application/driver-induced.
APPLICATION_XIDS = {13: "graphics engine exception", 31: "GPU memory page fault",
                    43: "GPU stopped processing (application)", 45: "preemptive cleanup"}
# amdgpu RAS: "amdgpu 0000:05:00.0: amdgpu: 3 uncorrectable hardware errors detected in umc block"
AMD_RAS = re.compile(r"amdgpu (?P<bus>[0-9a-fA-F:.]+):.*?(?P<count>\d+)?\s*(?P<kind>uncorrectable|correctable)"
                     r" hardware errors? detected in (?P<block>\S+)", re.IGNORECASE)
AMD_FATAL = re.compile(r"amdgpu (?P<bus>[0-9a-fA-F:.]+):.*(poison consumption|RAS event|fatal error|"
                       r"uncorrectable error|GPU reset begin)", re.IGNORECASE)


@dataclass(frozen=True)
class KernelEvent:
    bus_id: str
    code: str  # "Xid 79", "RAS uncorrectable umc"
    text: str
    fatal: bool


def kernel_events(text: str) -> list[KernelEvent] | None:
    """GPU events in a kernel log; None when the log could not be read (the probe prints
    gpu.KERNEL_LOG_READ after a log it could read, even an empty one)."""
    if text.lstrip().startswith(gpu.MISSING) or not text.strip():
        return None
    events = []
    for line in text.splitlines():
        if m := XID.search(line):
            xid = int(m["xid"])
            events.append(KernelEvent(m["bus"], f"Xid {xid}", m["text"].strip()[:160], xid not in APPLICATION_XIDS))
        elif m := AMD_RAS.search(line):
            kind = m["kind"].lower()
            events.append(KernelEvent(m["bus"], f"RAS {kind} {m['block']}", line.strip()[-160:], kind == "uncorrectable"))
        elif m := AMD_FATAL.search(line):
            events.append(KernelEvent(m["bus"], "RAS fatal", line.strip()[-160:], True))
    return events


def kernel_check(text: str | None) -> tuple[bool | None, str]:
    if text is None:
        return None, "kernel log not captured"
    events = kernel_events(text)
    if events is None:
        return None, "kernel log unreadable (no journal, dmesg restricted?)"
    fatal = [e for e in events if e.fatal]
    if fatal:
        shown = "; ".join(f"{e.bus_id}: {e.code} {e.text}".strip() for e in fatal[:5])
        return False, f"{len(fatal)} GPU error(s) since boot: {shown}"
    if events:
        codes = sorted({e.code for e in events})
        return True, f"no hardware XID/RAS error since boot; application events: {', '.join(codes)}"
    return True, "no XID or RAS event since boot"


# --- nvidia-smi -q: link, thermals, power, volatile ECC ---------------------------------


def _num(value) -> float | None:
    if not isinstance(value, str):
        return None
    m = re.match(r"^\s*(-?[0-9.]+)", value)
    return float(m.group(1)) if m else None


@dataclass(frozen=True)
class GpuVitals:
    bus_id: str
    pstate: str | None
    pcie_gen: tuple[float | None, float | None]  # (current, max)
    pcie_width: tuple[float | None, float | None]
    temp_c: float | None
    slowdown_c: float | None  # absolute slowdown temperature (older drivers)
    tlimit_margin_c: float | None  # degrees below T.Limit (newer drivers)
    tlimit_slowdown_c: float | None  # slowdown point relative to T.Limit, e.g. -2
    power_w: float | None
    power_limit_w: float | None
    throttled: tuple[str, ...]
    volatile_uncorrectable: int | None


THROTTLE = ("HW Slowdown", "HW Thermal Slowdown", "HW Power Brake Slowdown", "SW Thermal Slowdown")


def _vitals(g: dict) -> GpuVitals:
    link = (g.get("PCI") or {}).get("GPU Link Info") or {}
    gen, width = link.get("PCIe Generation") or {}, link.get("Link Width") or {}
    temp = g.get("Temperature") or {}
    power = g.get("GPU Power Readings") or g.get("Power Readings") or {}
    reasons = g.get("Clocks Event Reasons") or g.get("Clocks Throttle Reasons") or {}
    flat: dict[str, str] = {}

    def walk(d: dict) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            else:
                flat[k] = v
    walk(reasons)
    volatile = ((g.get("ECC Errors") or {}).get("Volatile") or {})
    unc = [_num(v) for k, v in volatile.items() if "Uncorrectable" in k or k in ("Double Bit ECC",)]
    unc_known = [u for u in unc if u is not None]
    return GpuVitals(
        bus_id=g["bus_id"], pstate=g.get("Performance State"),
        pcie_gen=(_num(gen.get("Current")), _num(gen.get("Max"))),
        pcie_width=(_num(width.get("Current")), _num(width.get("Max"))),
        temp_c=_num(temp.get("GPU Current Temp")),
        slowdown_c=_num(temp.get("GPU Slowdown Temp")),
        tlimit_margin_c=_num(temp.get("GPU T.Limit Temp")),
        tlimit_slowdown_c=_num(temp.get("GPU Slowdown T.Limit Temp")),
        power_w=_num(power.get("Instantaneous Power Draw")) or _num(power.get("Average Power Draw"))
        or _num(power.get("Power Draw")),
        power_limit_w=_num(power.get("Current Power Limit")) or _num(power.get("Enforced Power Limit")),
        throttled=tuple(k for k in THROTTLE if str(flat.get(k, "")).strip() == "Active"),
        volatile_uncorrectable=int(sum(unc_known)) if unc_known else None,
    )


def vitals(smi_q_text: str) -> list[GpuVitals] | None:
    report = gpu.parse_smi_q(smi_q_text)
    if report.status != "ok":
        return None
    return [_vitals(g) for g in gpu.parse_smi_q_tree(smi_q_text)["gpus"]]


def _none(vs: list[GpuVitals] | None) -> tuple[bool | None, str] | None:
    return (None, "nvidia-smi -q not captured or unusable") if vs is None else None


def pcie_check(vs: list[GpuVitals] | None) -> tuple[bool | None, str]:
    """Width below the maximum fails. A lower generation fails only under load (P0): idle
    GPUs train their link down to save power and back up when busy."""
    if (na := _none(vs)) is not None:
        return na
    bad, idle, unknown = [], [], []
    for v in vs:
        (gc, gm), (wc, wm) = v.pcie_gen, v.pcie_width
        if None in (gc, gm, wc, wm):
            unknown.append(v.bus_id)
            continue
        if wc < wm:
            bad.append(f"{v.bus_id}: x{wc:g} of x{wm:g}")
        if gc < gm:
            (bad if v.pstate == "P0" else idle).append(f"{v.bus_id}: gen {gc:g} of {gm:g} ({v.pstate})")
    if bad:
        return False, "PCIe link degraded: " + "; ".join(bad)
    if unknown and len(unknown) == len(vs):
        return None, "PCIe link not reported"
    first = vs[0]
    detail = f"gen {first.pcie_gen[0]:g} x{first.pcie_width[0]:g} = max on all GPUs" if not idle else \
        "width at max; idle link generation lowered: " + "; ".join(idle)
    return True, detail


def thermal_check(vs: list[GpuVitals] | None) -> tuple[bool | None, str]:
    if (na := _none(vs)) is not None:
        return na
    bad, seen = [], []
    for v in vs:
        if v.throttled:
            bad.append(f"{v.bus_id}: {', '.join(v.throttled)} active")
        if v.tlimit_margin_c is not None:
            floor = -(v.tlimit_slowdown_c or 0)  # slowdown when the margin falls below this
            seen.append((-v.tlimit_margin_c, f"{v.temp_c:g} C, {v.tlimit_margin_c:g} C below T.Limit"
                         if v.temp_c is not None else f"{v.tlimit_margin_c:g} C below T.Limit"))
            if v.tlimit_margin_c <= floor:
                bad.append(f"{v.bus_id}: {v.tlimit_margin_c:g} C below T.Limit (slowdown at {floor:g})")
        elif v.temp_c is not None and v.slowdown_c is not None:
            seen.append((v.temp_c - v.slowdown_c, f"{v.temp_c:g} C of slowdown {v.slowdown_c:g} C"))
            if v.temp_c >= v.slowdown_c:
                bad.append(f"{v.bus_id}: {v.temp_c:g} C >= slowdown {v.slowdown_c:g} C")
    if bad:
        return False, "; ".join(bad)
    if not seen:
        return None, "no temperature or limit reported"
    return True, "hottest: " + max(seen)[1]


def power_check(vs: list[GpuVitals] | None) -> tuple[bool | None, str]:
    if (na := _none(vs)) is not None:
        return na
    known = [v for v in vs if v.power_w is not None and v.power_limit_w]
    if not known:
        return None, "power draw or limit not reported"
    over = [f"{v.bus_id}: {v.power_w:g} W > limit {v.power_limit_w:g} W" for v in known if v.power_w > v.power_limit_w]
    if over:
        return False, "; ".join(over)
    top = max(known, key=lambda v: v.power_w / v.power_limit_w)
    return True, f"highest draw {top.power_w:g} W of {top.power_limit_w:g} W limit"


def volatile_ecc_check(vs: list[GpuVitals] | None) -> tuple[bool | None, str]:
    if (na := _none(vs)) is not None:
        return na
    known = [v for v in vs if v.volatile_uncorrectable is not None]
    if not known:
        return None, "volatile ECC counters not reported (ECC off?)"
    bad = [f"{v.bus_id}: {v.volatile_uncorrectable}" for v in known if v.volatile_uncorrectable]
    if bad:
        return False, "volatile uncorrectable ECC errors since the driver loaded: " + "; ".join(bad)
    return True, f"0 volatile uncorrectable ECC errors on {len(known)} GPU(s)"
