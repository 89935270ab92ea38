"""Issue 21 item 6: one converge at a time per gateway (r1deploy/fleet/lease.py, roles/_lease.py).

The lease's shell commands run for real here (bash on a temporary path stands in for the
gateway's disk): the first run takes it, a second waits its wait and refuses naming the holder,
only the holder's token releases it, and a stale lease (too old, or its process gone on this
controller) is taken over. The deploy files take the lease first and give it back last.
"""

import ast
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from r1deploy.roles import _lease

from r1deploy.fleet import lease as core
from tests.fleetsim import Clock

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Out:
    stdout_lines: list[str]
    stderr_lines: list[str] = field(default_factory=list)


class ShellHost:
    """A pyinfra-host stand-in whose shell is a real local bash (the lease's commands need nothing else)."""

    def __init__(self, name="gw"):
        self.name, self.connected, self.logs = name, True, []

    def run_shell_command(self, command, **_):
        done = subprocess.run(["bash", "-c", command.get_raw_value()], capture_output=True, text=True)
        return done.returncode == 0, Out(done.stdout.splitlines(), done.stderr.splitlines())

    def log(self, text):
        self.logs.append(text)


@pytest.fixture
def gateway(tmp_path, monkeypatch):
    monkeypatch.setattr(_lease, "PATH", str(tmp_path / "r1deploy" / "converge.lease"))
    import r1deploy.roles._rollout as rollout_helpers

    monkeypatch.setattr(rollout_helpers, "connector_args", lambda target=None: {})
    _lease.HELD.clear()
    yield ShellHost()
    _lease.HELD.clear()


def other_run(path: str, pid: int, controller="elsewhere", token="t-other") -> None:
    subprocess.run(["bash", "-c", core.acquire_command(controller, "alice", pid, token, path)], check=True)



def test_a_second_run_waits_then_refuses_naming_the_holder_issue_21_item_6(gateway, monkeypatch):
    other_run(_lease.PATH, 4242)
    clock = Clock()
    monkeypatch.setattr(_lease, "time", clock)
    why = _lease.take(gateway, wait_s=12, stale_s=3600)
    assert why and "alice@elsewhere (pid 4242) holds it" in why and _lease.PATH in why
    assert clock.now >= 12 and gateway.name not in _lease.HELD  # it waited before refusing


def test_the_holder_takes_it_once_and_only_its_token_releases_it_issue_21_item_6(gateway):
    assert _lease.take(gateway, 0, 3600) is None and _lease.take(gateway, 0, 3600) is None
    holder = core.Holder.parse((Path(_lease.PATH) / "holder").read_text())
    assert holder.token == _lease.TOKEN and holder.pid == os.getpid()
    subprocess.run(["bash", "-c", core.release_command("not-ours", _lease.PATH)], check=True)
    assert Path(_lease.PATH).is_dir()
    _lease.release_all()
    assert not Path(_lease.PATH).exists() and not _lease.HELD


def test_a_stale_lease_is_taken_over_issue_21_item_6(gateway):
    import socket

    dead = 2**22 + 12345  # above Linux's largest pid: no such process on this controller
    other_run(_lease.PATH, dead, controller=socket.gethostname())
    assert _lease.take(gateway, 0, 3600) is None
    assert "took over a stale converge lease" in gateway.logs[0]
    assert core.Holder.parse((Path(_lease.PATH) / "holder").read_text()).token == _lease.TOKEN


def test_stale_rules_are_age_or_a_dead_process_here():
    alive = core.Holder("ctl", "bob", 7, since=1000, token="x")
    assert not core.is_stale(alive, 1000 + 60, 3600, "ctl", lambda pid: True)
    assert core.is_stale(alive, 1000 + 3601, 3600, "ctl", lambda pid: True)
    assert core.is_stale(alive, 1060, 3600, "ctl", lambda pid: False)
    assert not core.is_stale(alive, 1060, 3600, "other-ctl", lambda pid: False)  # can't see its processes
    assert core.is_stale(None, 0, 3600, "ctl", lambda pid: True)


@pytest.mark.parametrize("deploy", ["converge", "roll_back"])
def test_deploy_files_take_the_lease_first_and_give_it_back_last_issue_21_item_6(deploy):
    """The deploys (r1deploy.deploys, issue 24 item 1): after validating (no operation), the lease is
    the first call and giving it back the last."""
    [fn] = [n for n in ast.parse((REPO / "deploy/_converge.py").read_text()).body
            if isinstance(n, ast.FunctionDef) and n.name == deploy]
    calls = [n.value.func.id for n in fn.body
             if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name)]
    assert calls[0] == "validated" and calls[1] == "_hold" and calls[-1] == "let_go", calls
