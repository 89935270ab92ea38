"""The verification gate for AMD Instinct hosts: count, model, memory, ECC/RAS, XGMI links,
firmware, the loaded amdgpu module, PCIe link, thermals, power, RAS events since boot and the
RCCL all-reduce. Same records, verdicts and exit codes as r1deploy.gpu.gate (NVIDIA).
"""

from __future__ import annotations

from dataclasses import dataclass

from r1deploy.gpu import allreduce, amd
from r1deploy.gpu import health as gpu_health
from r1deploy.gpu.gate import Check, Expectations


@dataclass(frozen=True)
class AmdObservation:
    inventory: amd.AmdInventory | None
    metrics: tuple[str, tuple[amd.AmdMetric, ...]] | None
    module: str | None  # loaded amdgpu version, "in-tree", or None (not loaded)
    installed_module: str | None  # what the installed amdgpu-dkms builds (None: not installed/unknown)
    xgmi: dict[str, list[str]] | None
    kernel_log: str | None = None
    allreduce: dict | None = None

    @classmethod
    def from_outputs(cls, out: dict[str, str | None], installed_module: str | None = None) -> AmdObservation:
        inventory = amd.parse_static(out["static"]) if out.get("static") is not None else None
        if (inventory is None or inventory.status == "no-driver") and out.get("rocm_smi"):
            inventory = amd.parse_rocm_smi(out["rocm_smi"])  # only the older tool is there
        return cls(inventory,
                   amd.parse_metric(out["metric"]) if out.get("metric") is not None else None,
                   amd.parse_module(out["module"]) if out.get("module") is not None else None,
                   installed_module,
                   amd.parse_xgmi_links(out["xgmi"]) if out.get("xgmi") is not None else None,
                   out.get("kernel_log"),
                   allreduce.parse(out["allreduce"]) if out.get("allreduce") is not None else None)


def _model_matches(name: str, expected: str) -> bool:
    e = expected.lower()
    return name.lower() in (e, f"amd instinct {e}", f"amd {e}") or name.lower().endswith(f" {e}")


def _inventory_checks(inv: amd.AmdInventory, exp: Expectations) -> list[tuple[str, bool | None, str]]:
    gpus = inv.gpus
    names = sorted({g.name for g in gpus})
    sizes = [g.memory_mib for g in gpus if g.memory_mib is not None]
    smallest = min(sizes) if sizes else None
    no_ecc = [g.index for g in gpus if g.ecc_enabled is False]
    unknown_ecc = all(g.ecc_enabled is None for g in gpus)
    firmware = sorted({g.firmware for g in gpus if g.firmware})
    memory_ok = None if smallest is None else (exp.min_memory_mib is None or smallest >= exp.min_memory_mib)
    return [
        ("gpu-count", exp.count is None or len(gpus) == exp.count,
         f"{len(gpus)} GPU(s)" + (f", expected {exp.count}" if exp.count else "")),
        ("gpu-model", exp.model is None or all(_model_matches(n, exp.model) for n in names),
         ", ".join(names) + (f"; expected {exp.model}" if exp.model else "")),
        ("gpu-memory", memory_ok if exp.min_memory_mib else (True if smallest else None),
         f"smallest {smallest} MiB" + (f", need >= {exp.min_memory_mib}" if exp.min_memory_mib else "")),
        ("ecc", (None if unknown_ecc else not no_ecc) if exp.require_ecc else True,
         f"ECC off on GPU {no_ecc}" if no_ecc else ("ECC state not reported" if unknown_ecc else "ECC on for all GPUs")),
        ("firmware", (len(firmware) <= 1) if firmware else None,
         f"one firmware on all GPUs: {firmware[0]}" if len(firmware) == 1 else
         (f"GPUs run different firmware: {', '.join(firmware)}" if firmware else "firmware version not reported")),
    ]


def _driver(obs: AmdObservation) -> tuple[bool | None, str]:
    if obs.module is None:
        return False, "amdgpu kernel module not loaded"
    if obs.installed_module is None:
        return True, f"amdgpu {obs.module} loaded (installed version not compared)"
    if obs.module != obs.installed_module:
        return False, f"loaded amdgpu {obs.module}, installed amdgpu-dkms builds {obs.installed_module} (reboot pending?)"
    return True, f"amdgpu {obs.module} loaded = installed amdgpu-dkms"


def _ras(obs: AmdObservation) -> tuple[bool | None, str]:
    if obs.metrics is None or obs.metrics[0] != "ok":
        return None, "amd-smi metric " + ("not captured" if obs.metrics is None else obs.metrics[0])
    bad = [f"GPU{m.index}: {m.ecc_uncorrectable}" for m in obs.metrics[1] if m.ecc_uncorrectable]
    known = [m for m in obs.metrics[1] if m.ecc_uncorrectable is not None]
    if bad:
        return False, "uncorrectable ECC/RAS errors: " + "; ".join(bad)
    if not known:
        return None, "ECC counters not reported"
    corrected = sum(m.ecc_correctable or 0 for m in known)
    return True, f"0 uncorrectable ECC errors on {len(known)} GPU(s); {corrected} corrected"


def _xgmi(obs: AmdObservation, count: int) -> tuple[bool | None, str] | None:
    if obs.xgmi is None:
        return (None, "XGMI link status not reported") if count > 1 else None
    down = [f"{bus} link {i}" for bus, states in sorted(obs.xgmi.items()) for i, s in enumerate(states) if s == "D"]
    up = sum(s == "U" for states in obs.xgmi.values() for s in states)
    return (not down, f"{len(down)} XGMI link(s) down: {', '.join(down)}" if down else f"{up} XGMI links up")


def _vitals(inv: amd.AmdInventory, obs: AmdObservation) -> list[tuple[str, bool | None, str]]:
    if obs.metrics is None or obs.metrics[0] != "ok":
        na = (None, "amd-smi metric not captured or unusable")
        return [("pcie-link", *na), ("thermals", *na), ("power", *na)]
    static = {g.index: g for g in inv.gpus}
    pcie_bad, hot, over, seen = [], [], [], []
    for m in obs.metrics[1]:
        g = static.get(m.index)
        if g and g.max_pcie_width and m.pcie_width is not None and m.pcie_width < g.max_pcie_width:
            pcie_bad.append(f"GPU{m.index}: x{m.pcie_width} of x{g.max_pcie_width}")
        if g and g.slowdown_hotspot_c and m.hotspot_c is not None and m.hotspot_c >= g.slowdown_hotspot_c:
            hot.append(f"GPU{m.index}: hotspot {m.hotspot_c:g} C >= slowdown {g.slowdown_hotspot_c:g} C")
        cap = m.power_cap_w or (g.max_power_w if g else None)
        if cap and m.socket_power_w is not None and m.socket_power_w > cap:
            over.append(f"GPU{m.index}: {m.socket_power_w:g} W > cap {cap:g} W")
        if m.hotspot_c is not None:
            seen.append(m.hotspot_c)
    return [
        ("pcie-link", not pcie_bad, "; ".join(pcie_bad) or "PCIe width at max (XGMI carries GPU-to-GPU traffic)"),
        ("thermals", (not hot) if seen else None, "; ".join(hot) or (f"hottest hotspot {max(seen):g} C" if seen else "no temperature reported")),
        ("power", not over, "; ".join(over) or "socket power within the cap"),
    ]


def run_gate(host: str, obs: AmdObservation, exp: Expectations) -> list[Check]:
    records: list[tuple[str, bool | None, str]] = []
    inv = obs.inventory
    if inv is None:
        records.append(("amd-smi", None, "amd-smi static output not captured"))
    else:
        records.append(("amd-smi", inv.ok, f"{len(inv.gpus)} GPU(s) listed" if inv.ok else f"{inv.status}: {inv.detail}"))
        if inv.ok:
            records.extend(_inventory_checks(inv, exp))
    records.append(("driver", *_driver(obs)))
    if inv is not None and inv.ok:
        records.append(("ras", *_ras(obs)))
        if (xgmi := _xgmi(obs, len(inv.gpus))) is not None:
            records.append(("xgmi", *xgmi))
        if exp.deep:
            records.append(("ras-events", *gpu_health.kernel_check(obs.kernel_log)))
            records.extend(_vitals(inv, obs))
        if exp.allreduce != "no":
            found = allreduce.check(obs.allreduce, exp.interconnect, required=exp.allreduce == "yes")
            if found:
                records.append(("rccl-allreduce", *found))
    return [Check(host, name, ok, detail) for name, ok, detail in records]


def outputs_from_dir(directory) -> dict[str, str | None]:
    """Recorded outputs by fixture name (amd.PROBES, kernel-log.txt, allreduce.json); the
    plain-text form of amd-smi static (amd-smi-static.txt) is read when there is no JSON."""
    from pathlib import Path

    base = Path(directory)
    names = {**{n: f for n, (f, _) in amd.PROBES.items()}, "kernel_log": "kernel-log.txt", "allreduce": "allreduce.json"}
    out = {n: (base / f).read_text(errors="replace") if (base / f).is_file() else None for n, f in names.items()}
    if out["static"] is None and (base / "amd-smi-static.txt").is_file():
        out["static"] = (base / "amd-smi-static.txt").read_text()
    return out
