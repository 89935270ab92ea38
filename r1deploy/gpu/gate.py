"""The GPU verification gate: is this host fit to serve? (DeepOps-validator style)

Checks what the spec expects (model, count, memory, driver branch) and what serving needs
(ECC on, no retired/remapped memory trouble, persistence, the NVLink fabric registered,
fabric manager running on NVSwitch boards). Each check is a record (host, check, ok,
detail) with ok None when it could not be checked. Exit code: 0 all ok, 1 any failed,
2 nothing failed but something could not be checked.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from r1deploy.gpu import allreduce, dpkg
from r1deploy.gpu import health as gpu_health
from r1deploy.gpu import nvidia as gpu


@dataclass(frozen=True)
class Expectations:
    model: str | None = None
    count: int | None = None
    min_memory_mib: int | None = None
    driver_branch: str | None = None
    driver_version: str | None = None
    open_kernel_modules: bool | None = None
    require_ecc: bool = True
    fabric_manager: str = "auto"  # auto | yes | no
    dcgm: bool = False  # run DCGM's quick diagnostic (`dcgmi diag -r 1`)
    # The deeper gate: XIDs since boot, PCIe link, thermals, power, volatile ECC.
    deep: bool = False
    allreduce: str = "no"  # auto (when torch is there) | yes | no
    interconnect: str | None = None  # the catalog's kind, for the expected all-reduce figure

    @classmethod
    def from_spec(cls, section, interconnect: str | None = None) -> Expectations:
        """From a GpuSection (duck-typed so this module stays free of pydantic)."""
        return cls(section.expected_model, section.expected_count, section.min_memory_mib,
                   section.driver_branch, section.driver_version, section.open_kernel_modules,
                   section.require_ecc, section.fabric_manager, section.dcgm,
                   getattr(section, "deep_gate", False), getattr(section, "allreduce", "no"), interconnect)


@dataclass(frozen=True)
class Observation:
    """Parsed probe outputs; None where a probe was not captured."""

    inventory: gpu.GpuInventory | None
    loaded: gpu.LoadedDriver | None
    smi: gpu.SmiReport | None
    nvswitches: int | None
    fabricmanager: str | None
    nvlink: dict | None
    dcgm: tuple[bool | None, str] | None = None
    vitals: list[gpu_health.GpuVitals] | None = None  # from nvidia-smi -q
    kernel_log: str | None = None  # raw text: the check tells "unreadable" from "clean"
    allreduce: dict | None = None

    @classmethod
    def from_outputs(cls, out: dict[str, str | None]) -> Observation:
        def parsed(name, parser):
            return None if out.get(name) is None else parser(out[name])

        return cls(
            parsed("query_gpu", gpu.parse_query_gpu),
            parsed("proc_version", gpu.parse_proc_version),
            parsed("smi_q", gpu.parse_smi_q),
            parsed("nvswitch", gpu.parse_nvswitch_count),
            parsed("fabricmanager", gpu.parse_fabricmanager),
            parsed("nvlink", gpu.parse_nvlink_status),
            parsed("dcgm", gpu.parse_dcgm_diag),
            parsed("smi_q", gpu_health.vitals),
            out.get("kernel_log"),
            parsed("allreduce", allreduce.parse),
        )


@dataclass(frozen=True)
class Check:
    host: str
    check: str
    ok: bool | None
    detail: str


def _model_matches(name: str, expected: str) -> bool:
    return name.lower() in (expected.lower(), f"nvidia {expected.lower()}")


def _gpu_checks(inv: gpu.GpuInventory, exp: Expectations) -> list[tuple[str, bool | None, str]]:
    gpus = inv.gpus
    names = sorted({g.name for g in gpus})
    smallest = min((g.memory_total_mib or 0) for g in gpus)
    no_ecc = [g.index for g in gpus if g.ecc is not True]
    no_pm = [g.index for g in gpus if g.persistence is not True]
    return [
        ("gpu-count", exp.count is None or len(gpus) == exp.count,
         f"{len(gpus)} GPU(s)" + (f", expected {exp.count}" if exp.count else "")),
        ("gpu-model", exp.model is None or all(_model_matches(n, exp.model) for n in names),
         ", ".join(names) + (f"; expected {exp.model}" if exp.model else "")),
        ("gpu-memory", exp.min_memory_mib is None or smallest >= exp.min_memory_mib,
         f"smallest {smallest} MiB" + (f", need >= {exp.min_memory_mib}" if exp.min_memory_mib else "")),
        ("ecc", not exp.require_ecc or not no_ecc,
         f"ECC off on GPU {no_ecc}" if no_ecc else "ECC on for all GPUs"),
        ("persistence", not no_pm,
         f"persistence mode off on GPU {no_pm}" if no_pm else "persistence mode on for all GPUs"),
    ]


def _driver_check(loaded: gpu.LoadedDriver | None, inv, exp: Expectations) -> tuple[bool | None, str]:
    if loaded is None:
        return None, "/proc/driver/nvidia/version not captured"
    if loaded.version is None:
        return False, "no NVIDIA kernel module loaded"
    problems = []
    if exp.driver_branch and loaded.branch != exp.driver_branch:
        problems.append(f"branch {loaded.branch}, expected {exp.driver_branch}")
    if exp.driver_version and dpkg.upstream_version(exp.driver_version) != loaded.version:
        problems.append(f"expected exactly {dpkg.upstream_version(exp.driver_version)}")
    if exp.open_kernel_modules is not None and loaded.open_kernel_module != exp.open_kernel_modules:
        flavor = "open" if loaded.open_kernel_module else "proprietary"
        problems.append(f"{flavor} kernel module, expected {'open' if exp.open_kernel_modules else 'proprietary'}")
    if inv is not None and inv.ok and inv.driver_version not in (None, loaded.version):
        problems.append(f"user space reports {inv.driver_version} (reboot pending?)")
    flavor = "open" if loaded.open_kernel_module else "proprietary"
    return not problems, f"loaded {loaded.version} ({flavor})" + ("; " + "; ".join(problems) if problems else "")


def _memory_health(smi: gpu.SmiReport | None) -> tuple[bool | None, str]:
    if smi is None or smi.status != "ok":
        return None, "nvidia-smi -q " + ("not captured" if smi is None else smi.status)
    problems = [f"{g.bus_id}: {p}" for g in smi.gpus for p in g.memory_problems]
    return not problems, "; ".join(problems) or "no retired-page or row-remapping trouble"


def _fabric(smi: gpu.SmiReport | None) -> tuple[bool | None, str]:
    if smi is None or smi.status != "ok":
        return None, "nvidia-smi -q " + ("not captured" if smi is None else smi.status)
    states = [(g.bus_id, g.fabric_ready, g.fabric_state, g.fabric_status) for g in smi.gpus]
    bad = [f"{b}: {s}/{st}" for b, ready, s, st in states if ready is False]
    if bad:
        return False, "GPU fabric not ready: " + "; ".join(bad)
    if all(ready is None for _, ready, _, _ in states):
        return True, "no NVLink fabric (PCIe or directly bridged GPUs)"
    return True, "all GPUs registered with the NVLink fabric"


def _fabric_manager(obs: Observation, exp: Expectations) -> tuple[bool | None, str]:
    if exp.fabric_manager == "no":
        return True, "not wanted (gpu_fabric_manager = no)"
    if exp.fabric_manager == "auto" and obs.nvswitches is None:
        fabric_ok, _ = _fabric(obs.smi)
        if fabric_ok:
            return True, "no local NVSwitch evidence captured; GPU fabric state is fine"
        return None, "could not tell whether this host has NVSwitches (no PCI listing): fabric manager not checked"
    if exp.fabric_manager == "auto" and obs.nvswitches == 0:
        return True, "not required (no NVSwitch on this host)"
    state = obs.fabricmanager
    why = f"{obs.nvswitches} NVSwitch(es)" if obs.nvswitches else "gpu_fabric_manager = yes"
    if state is None or state == "no-systemd":
        return None, f"required ({why}) but its state is unknown ({state or 'not captured'})"
    return state == "active", f"nvidia-fabricmanager {state} ({why})"


def _nvlink(status: dict | None) -> tuple[bool | None, str] | None:
    if not status:
        return None  # not captured, or no NVLink: nothing to say
    down = gpu.inactive_links(status)
    total = sum(len(links) for links in status.values())
    return not down, f"{len(down)} of {total} links inactive: {', '.join(down)}" if down else f"{total} links up"


def run_gate(host: str, obs: Observation, exp: Expectations) -> list[Check]:
    records: list[tuple[str, bool | None, str]] = []
    inv = obs.inventory
    if inv is None:
        records.append(("nvidia-smi", None, "query-gpu output not captured"))
    else:
        records.append(("nvidia-smi", inv.ok, f"{inv.status}: {inv.detail}" if not inv.ok else f"{len(inv.gpus)} GPU(s) listed"))
        if inv.ok:
            records.extend(_gpu_checks(inv, exp))
    records.append(("driver", *_driver_check(obs.loaded, inv, exp)))
    if inv is not None and inv.ok:
        records.append(("memory-health", *_memory_health(obs.smi)))
        records.append(("fabric", *_fabric(obs.smi)))
        records.append(("fabric-manager", *_fabric_manager(obs, exp)))
        nvlink = _nvlink(obs.nvlink)
        if nvlink:
            records.append(("nvlink", *nvlink))
        if exp.dcgm:
            records.append(("dcgm", *(obs.dcgm or (None, "dcgmi diag not captured"))))
        records.extend(deep_records(obs, exp))
    return [Check(host, name, ok, detail) for name, ok, detail in records]


def deep_records(obs: Observation, exp: Expectations) -> list[tuple[str, bool | None, str]]:
    records = []
    if exp.deep:
        records += [("xid", *gpu_health.kernel_check(obs.kernel_log)),
                    ("pcie-link", *gpu_health.pcie_check(obs.vitals)),
                    ("thermals", *gpu_health.thermal_check(obs.vitals)),
                    ("power", *gpu_health.power_check(obs.vitals)),
                    ("ecc-volatile", *gpu_health.volatile_ecc_check(obs.vitals))]
    if exp.allreduce != "no":
        found = allreduce.check(obs.allreduce, exp.interconnect, required=exp.allreduce == "yes")
        if found:
            records.append(("nccl-allreduce", *found))
    return records


def exit_code(checks: list[Check]) -> int:
    if any(c.ok is False for c in checks):
        return 1
    return 2 if any(c.ok is None for c in checks) else 0


def to_json(checks: list[Check]) -> str:
    return json.dumps([asdict(c) for c in checks], indent=2, sort_keys=True)


def render_table(checks: list[Check]) -> str:
    mark = {True: "ok", False: "FAIL", None: "??"}
    width = max((len(c.check) for c in checks), default=5)
    rows = [f"{c.host}  {c.check:<{width}}  {mark[c.ok]:<4}  {c.detail}" for c in checks]
    verdict = {0: "PASS", 1: "FAIL", 2: "COULD NOT CHECK"}[exit_code(checks)]
    return "\n".join([*rows, f"{checks[0].host if checks else '-'}: {verdict}"])


# --- where probe outputs come from ------------------------------------------------------


def outputs_from_dir(directory: str | Path) -> dict[str, str | None]:
    """Recorded outputs by their fixture file names; a missing file is a probe not captured."""
    base = Path(directory)
    files = {**{name: fname for name, (fname, _) in gpu.PROBES.items()}, "allreduce": ALLREDUCE_FILE}
    return {name: (base / fname).read_text(errors="replace") if (base / fname).is_file() else None
            for name, fname in files.items()}


ALLREDUCE_FILE = "allreduce.json"


def outputs_from_local(dcgm: bool = False, allreduce_python: str | None = None) -> dict[str, str | None]:
    """Run the probes here, as the pyinfra facts would run them over SSH (DCGM's diagnostic
    and the all-reduce take a while and only run when asked for)."""
    commands = {name: command for name, (_, command) in gpu.PROBES.items() if name != "dcgm" or dcgm}
    if allreduce_python:
        commands["allreduce"] = allreduce.command(allreduce_python)
    out: dict[str, str | None] = {}
    for name, command in commands.items():
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=600)
        out[name] = done.stdout
    return out


def save_outputs(outputs: dict[str, str | None], checks: list[Check], directory: str | Path) -> None:
    """Write what the probes printed under their fixture names, plus the verdict: evidence
    from a real host that doubles as a test fixture."""
    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    for name, text in outputs.items():
        if text is not None:
            (base / (ALLREDUCE_FILE if name == "allreduce" else gpu.PROBES[name][0])).write_text(text)
    (base / "gate.json").write_text(to_json(checks) + "\n")
    (base / "gate.txt").write_text(render_table(checks) + "\n")


def expectations_from_args(args: argparse.Namespace) -> Expectations:
    base = Expectations()
    if args.inventory:
        from pyinfra.api import State
        from pyinfra.context import ctx_state

        from r1deploy.fleet.inventory import load_specs

        # pyinfra's inventory loader records the file it executes on the current State.
        with ctx_state.use(State()):
            specs = load_specs(args.inventory)
        if args.host not in specs:
            raise SystemExit(f"host {args.host!r} not in {args.inventory} (has: {', '.join(specs)})")
        base = Expectations.from_spec(specs[args.host].gpu)
    overrides = {
        "model": args.expect_model, "count": args.expect_count, "min_memory_mib": args.min_memory_mib,
        "driver_branch": args.driver_branch, "driver_version": args.driver_version,
        "fabric_manager": args.fabric_manager,
    }
    if args.dcgm:
        overrides["dcgm"] = True
    if args.deep:
        overrides["deep"] = True
    if args.allreduce:
        overrides["allreduce"] = args.allreduce
    if args.interconnect:
        overrides["interconnect"] = args.interconnect
    values = {**asdict(base), **{k: v for k, v in overrides.items() if v is not None}}
    if args.no_ecc:
        values["require_ecc"] = False
    if args.open_kernel_modules is not None:
        values["open_kernel_modules"] = args.open_kernel_modules == "yes"
    return Expectations(**values)


def _gpu_check(args: argparse.Namespace) -> int:
    try:
        exp = expectations_from_args(args)
    except Exception as exc:  # a bad inventory: say so, "could not check"
        print(f"gpu-check: {exc}", file=sys.stderr)
        return 2
    python = args.allreduce_python if exp.allreduce != "no" else None
    outputs = outputs_from_dir(args.from_dir) if args.from_dir else outputs_from_local(exp.dcgm, python)
    host = args.host or (Path(args.from_dir).name if args.from_dir else "localhost")
    checks = run_gate(host, Observation.from_outputs(outputs), exp)
    if args.save_dir:
        save_outputs(outputs, checks, args.save_dir)
    if args.json:
        print(to_json(checks))
    else:
        print(render_table(checks))
    return exit_code(checks)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gpu-check", help="verify NVIDIA GPUs on this host (or recorded outputs) against the spec")
    _arguments(p)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from-dir", help="read recorded probe outputs from this directory instead of running them")
    p.add_argument("--inventory", help="take expectations from this pyinfra inventory (with --host)")
    p.add_argument("--host", help="inventory host name (also the name printed in records)")
    p.add_argument("--expect-model", help='e.g. "NVIDIA H200" or "H200"')
    p.add_argument("--expect-count", type=int)
    p.add_argument("--min-memory-mib", type=int)
    p.add_argument("--driver-branch", help="e.g. 580")
    p.add_argument("--driver-version", help="exact driver version, e.g. 580.159.04")
    p.add_argument("--open-kernel-modules", choices=["yes", "no"])
    p.add_argument("--fabric-manager", choices=["auto", "yes", "no"])
    p.add_argument("--no-ecc", action="store_true", help="do not require ECC")
    p.add_argument("--dcgm", action="store_true", help="also run DCGM's quick diagnostic (dcgmi diag -r 1)")
    p.add_argument("--deep", action="store_true",
                   help="also XIDs since boot, PCIe link, thermals, power, volatile ECC")
    p.add_argument("--allreduce", choices=["auto", "yes", "no"], help="NCCL all-reduce across this host's GPUs")
    p.add_argument("--allreduce-python", default=sys.executable, help="python with torch for the all-reduce")
    p.add_argument("--interconnect", help="catalog interconnect kind (nvswitch, nvlink, pcie, infinity-fabric)")
    p.add_argument("--save-dir", help="write the probe outputs (fixture names) and the verdict here")
    p.add_argument("--json", action="store_true", help="JSON records instead of a table")
    p.set_defaults(func=_gpu_check)


def main(argv: list[str] | None = None) -> int:
    """Standalone: `python3 -m r1deploy.gpu.gate ...` needs only the standard library (a bare
    GPU host with no wheels yet); --inventory needs pyinfra and pydantic."""
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__)
    _arguments(parser)
    return _gpu_check(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
