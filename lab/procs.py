"""The lab controller's processes: shell commands, and long-lived services started in their own
session with their pid recorded under STATE, so `down` (or the next `up`) stops them by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from lab.state import STATE

CGROUP_ROOTS = [Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified")]


def log(msg: str) -> None:
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


def sh(*cmd: str, check: bool = True, quiet: bool = False, **kw) -> subprocess.CompletedProcess:
    if not kw.get("capture_output"):  # gevent's subprocess refuses stdout= next to capture_output
        kw.setdefault("stdout", subprocess.DEVNULL if quiet else None)
        kw.setdefault("stderr", subprocess.DEVNULL if quiet else None)
    return subprocess.run(cmd, check=check, **kw)


def ok(*cmd: str) -> bool:
    return sh(*cmd, check=False, quiet=True).returncode == 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True


def pid_of(name: str) -> int | None:
    f = STATE / "pids" / name
    with contextlib.suppress(OSError, ValueError):
        pid = int(f.read_text())
        return pid if alive(pid) else None
    return None


def spawn(name: str, cmd: list[str], cgroup: str | None = None, env: dict | None = None) -> int:
    """Start a long-lived process in its own session (survives this command) and record its pid."""
    (STATE / "pids").mkdir(parents=True, exist_ok=True)
    (STATE / "logs").mkdir(parents=True, exist_ok=True)
    logf = open(STATE / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child

    def join_cgroup():
        os.setsid()
        if cgroup:
            for root in CGROUP_ROOTS:
                (root / cgroup / "cgroup.procs").write_text(str(os.getpid()))

    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                            preexec_fn=join_cgroup, env=env, close_fds=True)
    (STATE / "pids" / name).write_text(str(proc.pid))
    return proc.pid


def stop(name: str, timeout: float = 10) -> None:
    pid = pid_of(name)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        wait_gone([pid], timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    (STATE / "pids" / name).unlink(missing_ok=True)


def wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return True
        time.sleep(0.2)
    return False
