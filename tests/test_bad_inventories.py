"""What an operator gets wrong in an inventory: each mistake stops `r1deploy check`, `pyinfra …
deploy/main.py` and `--dry` with one list of `host 'x': key: reason` lines (or the file and line
of group data that does not execute), a non-zero exit, no traceback, and no connection attempted.

Every host's ssh_hostname is 127.0.0.1 at the port of a listener this test opens; after each run
the listener's accept queue must be empty (a good inventory, run through pyinfra, does connect:
the control at the end shows the watch sees it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bad_inventories import CASES, GOOD, HOSTS, SECRETS, Case, Fleet  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PYINFRA = str(Path(sys.executable).parent / "pyinfra")


class Listeners:
    """One TCP listener per host on 127.0.0.1; any connection attempt stays in its accept queue."""

    def __init__(self) -> None:
        self.socks = {}
        for host in HOSTS:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(16)
            s.setblocking(False)
            self.socks[host] = s
        self.ports = {h: s.getsockname()[1] for h, s in self.socks.items()}

    def connections(self) -> int:
        count = 0
        for s in self.socks.values():
            while True:
                try:
                    conn, _ = s.accept()
                except BlockingIOError:
                    break
                conn.close()
                count += 1
        return count

    def close(self) -> None:
        for s in self.socks.values():
            s.close()


@pytest.fixture(scope="module")
def listeners():
    watch = Listeners()
    yield watch
    watch.close()


def write_case(case: Case, where: Path, listeners: Listeners) -> tuple[Path, dict[str, str]]:
    fleet = Fleet(ports=dict(listeners.ports))
    case.change(fleet)
    inventory = fleet.write(where)
    env = {**os.environ, **SECRETS}
    for name, value in case.env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return inventory, env


def run(argv: list[str], env: dict[str, str], timeout: int = 120) -> tuple[int, str]:
    ran = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return ran.returncode, ran.stdout + ran.stderr


def problem_lines(out: str) -> list[str]:
    return [line.removeprefix("  - ") for line in out.splitlines() if line.startswith("  - host ")]


def assert_refused(case: Case, code: int, out: str, inventory: Path) -> None:
    assert code != 0, out
    assert "Traceback" not in out and "UnexpectedExternalError" not in out, out
    assert "Connecting to hosts" not in out, out
    if case.file_line:
        name, line = case.file_line
        assert f"{inventory.parent / name}:{line}: " in out, out
        assert not problem_lines(out), out
        return
    lines = problem_lines(out)
    assert f"invalid inventory ({len(lines)} problem(s)):" in out, out
    expected = {(host, key) for host, key in case.expect}
    named = set()
    for line in lines:
        hits = {(h, k) for h, k in expected
                if line.startswith(f"host '{h}': {k}") and line[len(f"host '{h}': {k}")] in ":["}
        assert len(hits) == 1, f"unexpected problem {line!r} for {case.name!r}:\n{out}"
        named |= hits
    assert named == expected and len(lines) == len(expected), out


def test_the_suite_is_big_enough():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


def check_in_process(inventory: Path, env: dict[str, str], capsys, monkeypatch) -> tuple[int, str]:
    """`r1deploy check INV` through its real entry point, in this process (a subprocess costs
    ~1 s of imports per case on a shared machine; the pyinfra runs below use real processes)."""
    from r1deploy.cli import main

    monkeypatch.chdir(REPO)
    for name in set(os.environ) - set(env):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(["check", str(inventory)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_check_refuses(case, tmp_path, listeners, capsys, monkeypatch):
    inventory, env = write_case(case, tmp_path, listeners)
    code, out = check_in_process(inventory, env, capsys, monkeypatch)
    assert_refused(case, code, out, inventory)
    assert listeners.connections() == 0


@pytest.mark.parametrize("case", GOOD, ids=[c.name for c in GOOD])
def test_check_accepts(case, tmp_path, listeners, capsys, monkeypatch):
    inventory, env = write_case(case, tmp_path, listeners)
    code, out = check_in_process(inventory, env, capsys, monkeypatch)
    assert code == 0, out
    assert f"ok: {len(HOSTS)} host(s) valid" in out
    assert listeners.connections() == 0


REPRESENTATIVE = ["TP16 on an 8-GPU node", "a host in two model groups", "newline in the service user",
                  "token file readable by others", "hub token variable unset", "undefined name in group data",
                  "syntax error in group data", "accept-new host keys in prod"]


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_pyinfra_refuses_before_connecting(name, tmp_path, listeners):
    case = next(c for c in CASES if c.name == name)
    inventory, env = write_case(case, tmp_path, listeners)
    code, checked = run([sys.executable, "-m", "r1deploy", "check", str(inventory)], env)
    assert_refused(case, code, checked, inventory)
    for mode in (["-y"], ["--dry"]):
        code, out = run([PYINFRA, *mode, str(inventory), "deploy/main.py"], env)
        assert_refused(case, code, out, inventory)
        assert problem_lines(out) == problem_lines(checked)  # the same lines as `r1deploy check`
    assert listeners.connections() == 0


def test_the_watch_sees_a_connection(tmp_path, listeners):
    """Control: the good fleet gets past validation and pyinfra dials the listeners."""
    inventory, env = write_case(GOOD[0], tmp_path, listeners)
    proc = subprocess.Popen([PYINFRA, "-y", str(inventory), "deploy/main.py", "--data", "ssh_connect_timeout=3"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen, deadline = 0, time.monotonic() + 60
        while not seen and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            seen = listeners.connections()
    finally:
        proc.kill()
        proc.wait()
    assert seen > 0
