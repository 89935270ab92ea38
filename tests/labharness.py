"""What the lab tests share: one lab bring-up and one first converge per test session.

Every lab module asks for the `fleet` fixture (tests/conftest.py): the lab goes up once with
three nodes and a gateway, deploy/main.py converges it once, and at the end of the session
`lab down` must leave nothing behind. Each module leaves the fleet converged to the lab
inventory as it found it, so the order of modules does not matter.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
PYINFRA = str(Path(PY).parent / "pyinfra")
# R1LAB_NODES=1 for a developer's own smaller lab (the default is CI's).
NODES = int(os.environ.get("R1LAB_NODES", "3"))
ROUTER_PORT = 8081  # the router's loopback port on the gateway (gateway_router_port)
LAB_INVENTORY = "lab/inventories/lab.py"
RATE = 4.0  # requests per second through the gateway, mixed (see tests/loadloop.py)


def run(*cmd: str, timeout: int = 1800, **env_extra: str) -> subprocess.CompletedProcess:
    """Run a command from the repo root; pyinfra logs to stderr, so .out holds both streams."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "R1DEPLOY_REPORTS": str(REPO / "reports"), **env_extra}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    done.out = done.stdout + done.stderr
    return done


def converge(*extra: str, timeout: int = 2400, inventory: str = LAB_INVENTORY, **env) -> subprocess.CompletedProcess:
    return run(PYINFRA, "-y", inventory, "deploy/main.py", *extra, timeout=timeout, **env)


def changed_ops(output: str) -> int:
    """The Success column of pyinfra's 'Grand total' row: operations that changed something."""
    row = next(line for line in output.splitlines() if "Grand total" in line)
    cells = row.split()[2:]  # Hosts, Success, Error, No Change
    return 0 if cells[1] == "-" else int(cells[1])


def ssh(lab: dict, name: str, command: str, user: str = "root", key: str | None = None,
        timeout: int = 120, stdin: str | None = None) -> subprocess.CompletedProcess:
    """stdin: text the command reads (a secret goes this way, never into the command line)."""
    ip = host_ip(lab, name)
    return subprocess.run(
        ["ssh", "-i", key or lab["ssh_key"], "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={lab['known_hosts']}",
         "-o", "StrictHostKeyChecking=accept-new", f"{user}@{ip}", command],
        capture_output=True, text=True, errors="replace", timeout=timeout, input=stdin)  # journals hold binary bits


def host_ip(lab: dict, name: str) -> str:
    return next(h["ip"] for h in lab["hosts"] if h["name"] == name)


def node_names(lab: dict) -> list[str]:
    return [h["name"] for h in lab["hosts"] if h["role"] == "node"]


def gateway_url(lab: dict) -> str:
    """The public edge (nginx, TLS by the lab's CA, an API key required)."""
    return lab["edge"]["gateway_url"]


def client_key_file(lab: dict, name: str = "lab-user") -> Path:
    """A client's key file on the controller (lab/edge.py: one file per key name, 0600)."""
    return Path(lab["edge"]["client_keys"]) / name


def client_key(lab: dict, name: str = "lab-user") -> str:
    return client_key_file(lab, name).read_text().strip()


def edge_http(lab: dict):
    """The HTTP client a user's OpenAI client needs for the edge's TLS: it trusts the lab's CA."""
    import ssl

    import openai

    return openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=lab["edge"]["ca"]), timeout=120)


def gateway_auth(lab: dict, name: str = "lab-user") -> dict:
    """openai.OpenAI (and LoadLoop) keyword arguments for a user of the edge: their key, the lab's CA."""
    return {"api_key": client_key(lab, name), "http_client": edge_http(lab)}


def router_workers(lab: dict) -> list[str]:
    """What the gateway's router routes to now, asked on its loopback (admin routes live there)."""
    out = ssh(lab, "gateway", f"curl -fsS -m 5 http://127.0.0.1:{ROUTER_PORT}/list_workers").stdout
    return sorted(json.loads(out)["urls"])


def node_urls(lab: dict) -> list[str]:
    return sorted(f"http://{host_ip(lab, n)}:8000" for n in node_names(lab))


def live_release(lab: dict, name: str) -> str:
    return ssh(lab, name, "cat /run/r1-vllm/release 2>/dev/null").stdout.strip().rsplit("/", 1)[-1]


def started_at(lab: dict, name: str) -> str:
    """When systemd last started the engine: unchanged means it never restarted."""
    return ssh(lab, name, "systemctl show -p ExecMainStartTimestampMonotonic --value r1-vllm").stdout.strip()


def lab_model(lab: dict) -> str:
    """The served model's name (what users ask for): the repo id without its owner."""
    return lab["model"]["repo_id"].split("/", 1)[1]


def under_load(lab: dict, action, **loop):
    """Run `action()` with the load loop going through the edge (tests/loadloop.py; `loop`: its
    bounds, e.g. max_seconds); returns (action's result, what users saw)."""
    from loadloop import LoadLoop

    load = LoadLoop(gateway_url(lab), lab_model(lab), rate=RATE, **loop, **gateway_auth(lab)).start()
    time.sleep(3)  # traffic flowing before the change starts
    try:
        result = action()
    finally:
        time.sleep(3)
        seen = load.stop()
    print(f"load: {seen.summary()}")
    return result, seen


def assert_no_user_saw_it(seen) -> None:
    assert seen.sent >= 40, seen.summary()
    assert seen.failed == 0 and seen.truncated == 0, seen.summary()


def rollout_report(reports: Path) -> dict:
    return json.loads((reports / "rollout.json").read_text())


def later_fleet_users(request) -> bool:
    """Whether a lab test after this one uses the shared fleet (then leave it as the lab inventory says)."""
    items = request.session.items
    return any("fleet" in item.fixturenames for item in items[items.index(request.node) + 1:])


def up(nodes: int = NODES) -> dict:
    done = run(PY, "-m", "lab", "up", "--nodes", str(nodes), timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def down() -> list[str]:
    sys.path.insert(0, str(REPO))
    from lab import labctl

    done = run(PY, "-m", "lab", "down", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return labctl.leftovers()


class EarlyBringUp:
    """The shared lab's bring-up (`lab up`, then the first converge) started as soon as the session
    knows a test will use it, so the unit tests before the first lab module run beside it: on CI's
    2 cores the bring-up waits on apt, SSH and vLLM's start much of the time. One background shell,
    its output in files (a process, not a thread: nothing in this gevent-patched process has to
    drain its pipes); `result()` gives what up() and converge() would have."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="r1lab-bringup-"))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "R1DEPLOY_REPORTS": str(REPO / "reports")}
        up_cmd = shlex.join([PY, "-m", "lab", "up", "--nodes", str(NODES)])
        conv_cmd = shlex.join([PYINFRA, "-y", LAB_INVENTORY, "deploy/main.py"])
        d = shlex.quote(str(self.dir))
        script = (f"{up_cmd} >{d}/up.out 2>{d}/up.err; rc=$?; echo $rc >{d}/up.rc; [ $rc = 0 ] || exit $rc; "
                  f"{conv_cmd} >{d}/converge.out 2>{d}/converge.err; echo $? >{d}/converge.rc")
        self.proc = subprocess.Popen(["bash", "-c", script], cwd=REPO, env=env, start_new_session=True)
        self.taken = False

    def result(self, timeout: int = 1500 + 2400) -> tuple[dict, subprocess.CompletedProcess]:
        self.taken = True
        self.proc.wait(timeout=timeout)
        read = lambda name: (self.dir / name).read_text() if (self.dir / name).exists() else ""  # noqa: E731
        up_rc = read("up.rc").strip()
        assert up_rc == "0", f"lab up exited {up_rc or 'without a status'}: " + read("up.err")[-3000:]
        out, err = read("converge.out"), read("converge.err")
        first = subprocess.CompletedProcess(["pyinfra", LAB_INVENTORY], int(read("converge.rc") or 1), out, err)
        first.out = out + err
        return json.loads(read("up.out")), first

    def abandon(self) -> None:
        """The session ends without a lab test having taken the lab (interrupted, or every lab test
        deselected later): stop the bring-up; the caller tears the lab down."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 15)
            self.proc.wait(60)
