"""Each lab host's CPU: a quota of its own, as a real host has cores of its own.

Without one, the guests share the controller's cores as one pool, and a rolling update under load
starves: vLLM's worker busy-polls its queue for a second after every step (SpinCondition in
vllm/distributed/device_communicators/shm_broadcast.py), so two nodes serving 4 requests/s take
both of CI's cores whatever the model's size, and a third node restarting meanwhile got about a
fifth of one (538 s to healthy, measured on the lab; 198 s with the lab's eager engine). With each
host capped at (cores x 0.9) / nodes, the same restart under the same load took 68 s and the
serving nodes answered every request. R1LAB_HOST_CPU (cores, e.g. "1.5"; "0": no cap) overrides.

cgroup v1's cpu controller (this machine's layout), else v2's cpu.max where the controller is on.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from lab.procs import log
from lab.state import LAB

V1 = Path("/sys/fs/cgroup/cpu")
V2 = Path("/sys/fs/cgroup/unified")
PERIOD_US = 100_000


def host_cores(nodes: int) -> float | None:
    """The cores each lab host may use; None: no cap."""
    wanted = os.environ.get("R1LAB_HOST_CPU")
    if wanted is not None:
        return float(wanted) or None
    cores = os.cpu_count() or 1
    return round(min(cores, cores * 0.9 / max(1, nodes)), 2)


def root() -> Path | None:
    """Where this lab's per-host cpu cgroups live; None when no cpu controller can be had."""
    if (V1 / "cpu.cfs_quota_us").exists():
        return V1 / LAB  # cgroup v1: a cpu hierarchy of its own, the lab's hosts moved into it
    with contextlib.suppress(OSError):
        if "cpu" in (V2 / "cgroup.controllers").read_text().split():
            return V2 / LAB  # cgroup v2: the hosts' own cgroups (lab/procs.py CGROUP_ROOTS)
    return None


def cap(name: str, pids: list[int], cores: float | None) -> None:
    """Put every process of host `name` under its quota (children forked later inherit it)."""
    base = root()
    if cores is None or base is None:
        if cores is not None:
            log(f"{name}: no cpu cgroup controller here, the hosts share the controller's cores")
        return
    group, quota = base / name, int(cores * PERIOD_US)
    group.mkdir(parents=True, exist_ok=True)
    if base.parent == V1:
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(quota))
        for pid in pids:
            with contextlib.suppress(OSError):  # a process that exited meanwhile
                (group / "cgroup.procs").write_text(str(pid))
        return
    for parent in (V2, base):  # v2: the controller must be on for the host's cgroup
        with contextlib.suppress(OSError):
            (parent / "cgroup.subtree_control").write_text("+cpu")
    (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")


def release(name: str | None = None) -> None:
    """Remove a host's v1 cpu cgroup (or, without a name, the lab's) once its processes are gone;
    v2's are the hosts' own cgroups, which `lab down` removes anyway."""
    base = root()
    if base is None or base.parent != V1:
        return
    with contextlib.suppress(OSError):
        (base / name).rmdir() if name else base.rmdir()


def leftover() -> list[str]:
    base = root()
    return [f"cgroup {base}"] if base is not None and base.parent == V1 and base.exists() else []
