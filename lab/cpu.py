"""Each lab host's CPU: a cgroup of its own with an equal weight, as a real host has its own cores.

Without one, the guests' processes share the controller's cores one by one, and a rolling update
under load starves: vLLM's worker busy-polls its queue for a second after every step (SpinCondition
in vllm/distributed/device_communicators/shm_broadcast.py), so two nodes serving 4 requests/s take
both of CI's cores whatever the model's size, and a third node restarting meanwhile, one process
among many, got about a fifth of one (538 s to healthy, measured on the lab; 198 s with the lab's
eager engine). One cgroup per host gives every busy host an equal part (the restarting one too:
68 s under the same load with a 0.6-core cap, and every request answered), and a host alone at
work still gets every core (a quiet first deploy stays fast). R1LAB_HOST_CPU (cores, e.g. "0.6")
adds a hard cap per host.

cgroup v1's cpu controller (this machine's layout), else v2's cpu controller where it is on.
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


def host_cores() -> float | None:
    """A hard cap on the cores each lab host may use; None: equal weights only."""
    return float(os.environ.get("R1LAB_HOST_CPU") or 0) or None


def root() -> Path | None:
    """Where this lab's per-host cpu cgroups live; None when no cpu controller can be had."""
    if (V1 / "cpu.cfs_quota_us").exists():
        return V1 / LAB  # cgroup v1: a cpu hierarchy of its own, the lab's hosts moved into it
    with contextlib.suppress(OSError):
        if "cpu" in (V2 / "cgroup.controllers").read_text().split():
            return V2 / LAB  # cgroup v2: the hosts' own cgroups (lab/procs.py CGROUP_ROOTS)
    return None


def place(name: str, pids: list[int], cores: float | None) -> None:
    """Give host `name` its cpu cgroup (equal weight; a cap of `cores` if set) and move every
    process of it there; children forked later inherit it."""
    base = root()
    if base is None:
        log(f"{name}: no cpu cgroup controller here, the hosts' processes share the controller's cores")
        return
    group = base / name
    group.mkdir(parents=True, exist_ok=True)
    quota = int(cores * PERIOD_US) if cores else None
    if base.parent == V1:
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(quota or -1))
        for pid in pids:
            with contextlib.suppress(OSError):  # a process that exited meanwhile
                (group / "cgroup.procs").write_text(str(pid))
        return
    for parent in (V2, base):  # v2: the hosts' own cgroups, once the controller is on for them
        with contextlib.suppress(OSError):
            (parent / "cgroup.subtree_control").write_text("+cpu")
    (group / "cpu.max").write_text(f"{quota or 'max'} {PERIOD_US}")


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
