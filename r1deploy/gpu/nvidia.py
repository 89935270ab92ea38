"""NVIDIA host state from command output: pure parsers, no SSH, no pyinfra.

Every parser takes the text a command printed (or a marker the probe command printed
instead) and returns a value that says what it found; a host with no GPU, no driver or a
broken driver yields a status, never an exception. The probe commands live here too, so
pyinfra facts, the local ``gpu-check`` and the recorded fixtures all run the same thing.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

QUERY_GPU_FIELDS = (
    "index,uuid,name,pci.bus_id,memory.total,memory.used,driver_version,persistence_mode,"
    "compute_mode,temperature.gpu,power.limit,clocks.max.sm,ecc.mode.current,mig.mode.current"
)
QUERY_GPU = f"nvidia-smi --query-gpu={QUERY_GPU_FIELDS} --format=csv"

# Printed by a probe instead of output when its binary is absent (no driver installed).
MISSING = "R1DEPLOY_MISSING"
NO_SYSTEMD = "R1DEPLOY_NO_SYSTEMD"

# SIMULATION ONLY (lab/gpu_repo.py): lab hosts cannot change /proc or grow PCI devices, so the
# simulated "kernel module" writes its version here at boot and the lab declares NVSwitches
# here. The probes read these files only in their `simulated` form (probe(name, simulated=True)),
# which the role uses only when the host data says gpu_simulation = True (only the lab's
# inventory does) AND the host carries SIM_SWITCH (only the lab writes it): leftovers of a
# simulation on a real host can never fake its driver.
SIM_DIR = "/var/lib/r1deploy-gpu-sim"
SIM_PROC_VERSION = f"{SIM_DIR}/proc-driver-version"
SIM_NVSWITCH = f"{SIM_DIR}/nvswitch.txt"
SIM_SWITCH = "/etc/r1deploy/gpu-simulation"
SIM_KERNEL_LOG = f"{SIM_DIR}/kernel-log.txt"  # the simulated kernel's messages (XIDs the lab injects)
KERNEL_LOG_READ = "R1DEPLOY_KERNEL_LOG_READ"  # printed after a kernel log that could be read
PROC_VERSION = "/proc/driver/nvidia/version"

SMI_FAILED = "NVIDIA-SMI has failed"
NO_PCI_LISTING = f"{MISSING} pci-listing"  # neither lspci nor /sys/bus/pci answered
NO_DEVICES = "No devices were found"


def _guarded(binary: str, command: str) -> str:
    """Run `command` if `binary` exists, else print MISSING; never a non-zero exit
    (pyinfra fails the host when a fact command fails, and a broken driver is a value)."""
    return (f"if command -v {binary} >/dev/null 2>&1; then {command} 2>&1 || true; "
            f"else echo {MISSING} {binary}; fi")


# name -> (recorded file name, shell command); the fixture names are those of the recordings.
PROBES: dict[str, tuple[str, str]] = {
    "query_gpu": ("query-gpu.csv", _guarded("nvidia-smi", QUERY_GPU)),
    "proc_version": (
        "proc-driver-version.txt",
        f"cat {PROC_VERSION} 2>/dev/null || echo {MISSING} {PROC_VERSION}",
    ),
    "smi_q": ("nvidia-smi-q.txt", _guarded("nvidia-smi", "nvidia-smi -q")),
    "topo": ("topo.txt", _guarded("nvidia-smi", "nvidia-smi topo -m")),
    "nvlink": ("nvlink-s.txt", _guarded("nvidia-smi", "nvidia-smi nvlink -s")),
    "nvswitch": (
        "nvswitch.txt",
        # NVSwitch chips are PCI bridges (class 0680) of vendor 10de, listed by sysfs and lspci
        # (pciutils, which the GPU role installs); /dev nodes appear once the driver binds them.
        # Any one is evidence of an HGX/DGX baseboard. With no PCI listing at all the probe says
        # so (NO_PCI_LISTING): "no switch" is never read from a probe that could not run.
        "{ ls -1 /dev/nvidia-nvswitch* 2>/dev/null; listed=; "
        "if [ -r /sys/bus/pci/devices ] && [ -n \"$(ls /sys/bus/pci/devices 2>/dev/null)\" ]; then listed=1; "
        "for d in /sys/bus/pci/devices/*; do [ \"$(cat \"$d/vendor\" 2>/dev/null)\" = 0x10de ] && "
        "case \"$(cat \"$d/class\" 2>/dev/null)\" in 0x0680*) echo \"${d##*/} 0680: sysfs\";; esac; done; fi; "
        "if command -v lspci >/dev/null 2>&1 && out=$(lspci -n -d 10de: 2>/dev/null); then listed=1; "
        "printf '%s\\n' \"$out\" | grep ' 0680: '; fi; "
        f"[ -n \"$listed\" ] || echo '{NO_PCI_LISTING}'; }} | cat",
    ),
    "fabricmanager": (
        "fabricmanager.txt",
        "if [ -d /run/systemd/system ]; then systemctl is-active nvidia-fabricmanager 2>&1 || true; "
        f"else echo {NO_SYSTEMD}; fi",
    ),
    "dcgm": ("dcgm-diag.txt", _guarded("dcgmi", "dcgmi diag -r 1")),
    "ldconfig": ("ldconfig.txt", "ldconfig -p 2>/dev/null | grep -E 'libnccl|libcudart|libcuda\\.' || true"),
    "nvcc": ("nvcc.txt", "{ nvcc --version || /usr/local/cuda/bin/nvcc --version; } 2>/dev/null || true"),
    # The kernel's messages since this boot (XIDs, AMD RAS events): the journal where there is
    # one, else the ring buffer (which may need root: kernel.dmesg_restrict).
    "kernel_log": (
        "kernel-log.txt",
        "{ journalctl -k -b -q --no-pager -o short-monotonic 2>/dev/null || dmesg 2>/dev/null; } "
        f"&& echo {KERNEL_LOG_READ} || echo {MISSING} kernel log",
    ),
}

_SIMULATED = {
    "proc_version": f"{{ [ -f {SIM_SWITCH} ] && cat {SIM_PROC_VERSION} 2>/dev/null; }} || ",
    # The simulation's listing stands alone (empty: a PCIe host): a lab host has no PCI devices of
    # its own, and the real probe would add "no PCI listing" (could not check) to it.
    "nvswitch": f"{{ [ -f {SIM_SWITCH} ] && cat {SIM_NVSWITCH} 2>/dev/null; }} || ",
    "kernel_log": f"{{ [ -f {SIM_SWITCH} ] && cat {SIM_KERNEL_LOG} 2>/dev/null; }}; ",
}


def probe(name: str, simulated: bool = False) -> str:
    """The shell command of probe `name`; `simulated` (lab hosts only) lets it read the
    simulation's files first, and only where the lab's switch file exists."""
    command = PROBES[name][1]
    if simulated and name in _SIMULATED:
        command = _SIMULATED[name] + command
    return command


class _Record:
    """JSON for `pyinfra ... fact` output (pyinfra's CLI calls to_json on unknown objects)."""

    def to_json(self) -> dict:
        return asdict(self)


# --- nvidia-smi --query-gpu -------------------------------------------------------------


@dataclass(frozen=True)
class Gpu(_Record):
    index: int
    uuid: str
    name: str
    bus_id: str
    memory_total_mib: int | None
    memory_used_mib: int | None
    driver_version: str
    persistence: bool | None
    compute_mode: str
    temperature_c: int | None
    power_limit_w: float | None
    max_sm_clock_mhz: int | None
    ecc: bool | None
    mig: bool | None


@dataclass(frozen=True)
class GpuInventory(_Record):
    """What nvidia-smi said. status: ok | no-gpu | no-driver | smi-failed | unparsable."""

    status: str
    gpus: tuple[Gpu, ...] = ()
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def driver_version(self) -> str | None:
        versions = {g.driver_version for g in self.gpus}
        return versions.pop() if len(versions) == 1 else None


def _number(text: str, kind=int):
    match = re.match(r"^\s*([0-9.]+)", text)
    if not match:
        return None  # "[N/A]", "[Not Supported]"
    return kind(float(match.group(1))) if kind is int else kind(match.group(1))


def _flag(text: str) -> bool | None:
    return {"enabled": True, "disabled": False}.get(text.strip().lower())


def _failure(text: str) -> GpuInventory | None:
    """The status of output that is not data: binary missing, driver unreachable, no GPU."""
    stripped = text.strip()
    if not stripped or stripped.startswith(MISSING):
        return GpuInventory("no-driver", detail="nvidia-smi is not installed")
    if SMI_FAILED in stripped:
        return GpuInventory("smi-failed", detail=stripped.splitlines()[0])
    if NO_DEVICES in stripped:
        return GpuInventory("no-gpu", detail=stripped.splitlines()[0])
    return None


def parse_query_gpu(text: str) -> GpuInventory:
    failed = _failure(text)
    if failed:
        return failed
    lines = [line for line in text.splitlines() if line.strip()]
    header = next((i for i, line in enumerate(lines) if line.startswith("index,")), None)
    if header is None:
        return GpuInventory("unparsable", detail=lines[0][:200])
    warnings = " ".join(lines[:header])  # e.g. "WARNING: infoROM is corrupted at gpu ..."
    gpus = []
    for line in lines[header + 1:]:
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 14:
            return GpuInventory("unparsable", detail=line[:200])
        gpus.append(Gpu(
            index=int(cells[0]), uuid=cells[1], name=cells[2], bus_id=cells[3],
            memory_total_mib=_number(cells[4]), memory_used_mib=_number(cells[5]),
            driver_version=cells[6], persistence=_flag(cells[7]), compute_mode=cells[8],
            temperature_c=_number(cells[9]), power_limit_w=_number(cells[10], float),
            max_sm_clock_mhz=_number(cells[11]), ecc=_flag(cells[12]), mig=_flag(cells[13]),
        ))
    if not gpus:
        return GpuInventory("no-gpu", detail="nvidia-smi listed no GPU")
    return GpuInventory("ok", tuple(gpus), detail=warnings[:500])


# --- /proc/driver/nvidia/version --------------------------------------------------------


@dataclass(frozen=True)
class LoadedDriver(_Record):
    """The kernel module actually running (None version: no module loaded)."""

    version: str | None
    open_kernel_module: bool | None = None

    @property
    def branch(self) -> str | None:
        return self.version.split(".", 1)[0] if self.version else None


NVRM = re.compile(r"^NVRM version:\s+NVIDIA UNIX (?P<kind>.*?)\s+(?P<version>\d+\.\d+(?:\.\d+)?)\s")


def parse_proc_version(text: str) -> LoadedDriver:
    for line in text.splitlines():
        match = NVRM.match(line + " ")
        if match:
            return LoadedDriver(match["version"], "Open Kernel Module" in match["kind"])
    return LoadedDriver(None)


# --- nvidia-smi -q ----------------------------------------------------------------------


def parse_smi_q_tree(text: str) -> dict:
    """`nvidia-smi -q` as nested dicts by indentation; GPUs under "gpus" in order."""
    root: dict = {"gpus": []}
    stack: list[tuple[int, dict]] = [(-1, root)]
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("="):
            continue
        indent = len(raw) - len(raw.lstrip())
        if indent == 0 and re.match(r"^GPU [0-9A-Fa-f]+:[0-9A-Fa-f]+:", raw):
            gpu = {"bus_id": raw.strip()[4:]}
            root["gpus"].append(gpu)
            stack = [(-1, root), (0, gpu)]
            continue
        key, sep, value = raw.strip().partition(":")
        key, value = key.strip(), value.strip()
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if sep and value:
            parent[key] = value
        else:
            child: dict = {}
            parent[key] = child
            stack.append((indent, child))
    return root


@dataclass(frozen=True)
class GpuHealth(_Record):
    bus_id: str
    ecc_current: bool | None
    retired_sbe: int | None
    retired_dbe: int | None
    retirement_pending: bool
    remap_uncorrectable: int | None
    remap_pending: bool
    remap_failure: bool
    fabric_state: str | None
    fabric_status: str | None

    @property
    def memory_problems(self) -> list[str]:
        found = []
        if self.retired_dbe:
            found.append(f"{self.retired_dbe} page(s) retired for double-bit ECC")
        if self.retirement_pending:
            found.append("page retirement pending (reset the GPU)")
        if self.remap_failure:
            found.append("row remapping failure occurred (RMA)")
        if self.remap_pending:
            found.append("row remapping pending (reset the GPU)")
        return found

    @property
    def fabric_ready(self) -> bool | None:
        """None when the GPU has no fabric (PCIe cards); else registered with the fabric."""
        if self.fabric_state in (None, "N/A"):
            return None
        return self.fabric_state == "Completed" and self.fabric_status == "Success"


@dataclass(frozen=True)
class SmiReport(_Record):
    status: str
    driver_version: str | None = None
    cuda_version: str | None = None
    gpus: tuple[GpuHealth, ...] = ()
    detail: str = ""


def _yes(value) -> bool:
    return isinstance(value, str) and value.strip().lower() == "yes"


def _health(gpu: dict) -> GpuHealth:
    retired = gpu.get("Retired Pages") or {}
    remap = gpu.get("Remapped Rows") or {}
    fabric = gpu.get("Fabric") or {}
    ecc = gpu.get("ECC Mode") or {}
    return GpuHealth(
        bus_id=gpu["bus_id"],
        ecc_current=_flag(ecc.get("Current", "")) if isinstance(ecc, dict) else None,
        retired_sbe=_number(str(retired.get("Single Bit ECC", ""))),
        retired_dbe=_number(str(retired.get("Double Bit ECC", ""))),
        retirement_pending=_yes(retired.get("Pending Page Blacklist")),
        remap_uncorrectable=_number(str(remap.get("Uncorrectable Error", ""))),
        remap_pending=_yes(remap.get("Pending")),
        remap_failure=_yes(remap.get("Remapping Failure Occurred")),
        fabric_state=fabric.get("State"),
        fabric_status=fabric.get("Status"),
    )


def parse_smi_q(text: str) -> SmiReport:
    failed = _failure(text)
    if failed:
        return SmiReport(failed.status, detail=failed.detail)
    tree = parse_smi_q_tree(text)
    if "Driver Version" not in tree:
        return SmiReport("unparsable", detail=text.strip()[:200])
    gpus = tuple(_health(g) for g in tree["gpus"])
    return SmiReport("ok" if gpus else "no-gpu", tree.get("Driver Version"), tree.get("CUDA Version"), gpus)


# --- nvidia-smi topo -m -----------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class Topology(_Record):
    """GPU-to-GPU links from `topo -m`: "NV18" (NVLink, bonded count) or a PCIe path kind."""

    def to_json(self) -> dict:
        return {"status": self.status, "gpus": list(self.gpus), "interconnect": self.interconnect,
                "links": {f"{a}-{b}": kind for (a, b), kind in self.links.items()}, "detail": self.detail}

    status: str
    gpus: tuple[str, ...] = ()
    links: dict[tuple[str, str], str] = field(default_factory=dict)
    detail: str = ""

    @property
    def nvlink_pairs(self) -> int:
        return sum(1 for (a, b), kind in self.links.items() if a < b and kind.startswith("NV"))

    @property
    def all_to_all_nvlink(self) -> bool:
        n = len(self.gpus)
        return n > 1 and self.nvlink_pairs == n * (n - 1) // 2

    @property
    def interconnect(self) -> str:
        if len(self.gpus) < 2:
            return "single"
        if self.all_to_all_nvlink:
            return "nvlink"
        return "mixed" if self.nvlink_pairs else "pcie"


def parse_topo(text: str) -> Topology:
    failed = _failure(text)
    if failed:
        return Topology(failed.status, detail=failed.detail)
    lines = [ANSI.sub("", line) for line in text.splitlines()]
    header = next((line for line in lines if line.strip().startswith("GPU0")), None)
    if header is None:
        return Topology("unparsable", detail=text.strip()[:200])
    columns = [c.strip() for c in header.split("\t") if c.strip()]
    gpus = tuple(c for c in columns if re.fullmatch(r"GPU\d+", c))
    links = {}
    for line in lines:
        cells = [c.strip() for c in line.split("\t")]
        if cells and cells[0] in gpus:
            for other, kind in zip(gpus, cells[1:1 + len(gpus)], strict=False):
                if other != cells[0]:
                    links[(cells[0], other)] = kind
    return Topology("ok", gpus, links)


# --- nvidia-smi nvlink -s ---------------------------------------------------------------


def parse_nvlink_status(text: str) -> dict[int, dict[int, str]]:
    """GPU index -> link -> speed text ("26.562 GB/s" or "<inactive>"); {} without NVLink."""
    result: dict[int, dict[int, str]] = {}
    current = None
    for line in text.splitlines():
        gpu = re.match(r"^GPU (\d+):", line)
        link = re.match(r"^\s+Link (\d+): (.+)$", line)
        if gpu:
            current = result.setdefault(int(gpu.group(1)), {})
        elif link and current is not None:
            current[int(link.group(1))] = link.group(2).strip()
    return result


def inactive_links(status: dict[int, dict[int, str]]) -> list[str]:
    return [f"GPU{g} link {n}" for g, links in sorted(status.items())
            for n, speed in sorted(links.items()) if "inactive" in speed.lower()]


# --- NVSwitch, fabric manager, CUDA / NCCL ---------------------------------------------


def parse_nvswitch_count(text: str) -> int | None:
    """NVSwitch chips: the larger of the /dev nodes and the distinct PCI bridges (sysfs and lspci
    name the same chip); None when the probe had no PCI listing and no /dev node (could not check)."""
    lines = [line.strip() for line in text.splitlines()]
    nodes = sum(1 for line in lines if re.fullmatch(r"/dev/nvidia-nvswitch\d+", line))
    bridges = {re.sub(r"^[0-9a-f]{4}:", "", line.split()[0].lower()) for line in lines if " 0680: " in line}
    if not nodes and not bridges and any(line.startswith(NO_PCI_LISTING) for line in lines):
        return None
    return max(nodes, len(bridges))


def parse_fabricmanager(text: str) -> str:
    """`systemctl is-active`: active | inactive | failed | activating | ..., or no-systemd.
    (A unit that is not installed reads "inactive", which is what it is.)"""
    word = (text.strip().splitlines() or ["unknown"])[-1].strip()
    if word == NO_SYSTEMD:
        return "no-systemd"
    return word if word in ("active", "inactive", "failed", "activating", "deactivating") else "unknown"


@dataclass(frozen=True)
class CudaStack(_Record):
    cuda_runtime_major: str | None
    nccl_soname: str | None
    nvcc_version: str | None


def parse_cuda_stack(ldconfig: str, nvcc: str) -> CudaStack:
    cudart = re.search(r"libcudart\.so\.(\d+)\b", ldconfig)
    nccl = re.search(r"libnccl\.so\.(\d+)\b", ldconfig)
    release = re.search(r"release [\d.]+, V([\d.]+)", nvcc)
    return CudaStack(cudart and cudart.group(1), nccl and nccl.group(1), release and release.group(1))


def parse_dcgm_diag(text: str) -> tuple[bool | None, str]:
    """`dcgmi diag -r 1`: (False, failing rows) | (True, "n tests passed") | (None, why not)."""
    if text.strip().startswith(MISSING):
        return None, "dcgmi is not installed"
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|--") and not line.startswith("|==")]
    results = [(r[0], r[1]) for r in rows if len(r) >= 2 and r[1].split(" ")[:1][0] in ("Pass", "Fail", "Warn", "Skip")]
    failed = [f"{name}: {result}" for name, result in results if result.startswith(("Fail", "Warn"))]
    if failed:
        return False, "; ".join(failed)
    if not results:
        first = (text.strip().splitlines() or ["no output"])[0]
        return False, f"no diagnostic results: {first[:200]}"
    return True, f"{sum(r.startswith('Pass') for _, r in results)} diagnostic(s) passed"
