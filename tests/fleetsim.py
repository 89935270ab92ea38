"""Hosts whose shell answers the rollout's commands from a model of the node, so a rollout turn
(roles/serve) runs for real against pyinfra hosts without connecting anywhere.

Each `SimNode` keeps what the rollout reads and changes on a node — release pointers, the
engine unit's systemd state, its journal, in-flight requests — and how each release behaves
when started ("serves", "crash" = exits at once and loops, "hang" = runs but never answers).
A `SimGateway` keeps its router's worker list. Every command lands in `World.log` in order, so
tests assert what was done where and when. A command the model does not know fails the test.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import asdict, dataclass, field

from pyinfra.api import Config, Inventory, State
from pyinfra.context import ctx_host, ctx_inventory, ctx_state

from r1deploy.serving.smoke import Check, NodeReport

RELEASES = "/etc/r1deploy/releases/"


class UnknownCommand(AssertionError):
    pass


class Fails(Exception):
    """A command that exits non-zero on the simulated host, with this output."""


@dataclass
class Output:
    stdout_lines: list[str]
    stderr_lines: list[str] = field(default_factory=list)

    def __iter__(self):  # pyinfra's executor collects a command's output lines
        return iter(())


@dataclass
class SimNode:
    name: str
    current: str | None = "r1"
    previous: str | None = "r0"
    running: str | None = "r1"  # the release the engine runs (None: stopped)
    behaviour: dict[str, str] = field(default_factory=dict)  # release -> serves | crash | hang
    error_line: str = ""  # what vLLM logs when a release crashes
    restarts: int = 0
    head_of: list[SimNode] | None = None  # a group head: the members it needs (itself first)
    model: str = "tiny"
    gone: set[str] = field(default_factory=set)  # releases whose directory is missing or incomplete
    history: list[str] = field(default_factory=list)  # /etc/r1deploy/history
    in_flight: int = 0  # requests vLLM runs (the drain waits for 0)
    # A driver reboot (issue 21 item 1): the boot, the driver loaded vs installed, the GPU gate's verdict.
    boot: int = 1
    loaded: str = "580.126.09"
    installed: str = "580.126.09"
    gate_ok: bool = True
    enabled: bool = True  # the engine unit starts on boot

    def how(self, release: str | None) -> str:
        return self.behaviour.get(release or "", "serves")

    def unit(self) -> str:
        if self.running is None:
            return "ActiveState=inactive\nSubState=dead\nNRestarts=0"
        if self.how(self.running) == "crash":
            self.restarts += 1  # systemd restarts it every few seconds
            return f"ActiveState=activating\nSubState=auto-restart\nNRestarts={self.restarts}"
        return f"ActiveState=active\nSubState=running\nNRestarts={self.restarts}"

    def answers(self) -> bool:
        members = self.head_of or [self]
        return all(m.running and m.how(m.running) == "serves" for m in members)

    def journal(self) -> str:
        if self.running and self.how(self.running) == "crash":
            return f"INFO starting vLLM\n{self.error_line}\nr1-vllm.service: Main process exited, code=exited"
        return "INFO starting vLLM"

    def reboot(self) -> None:
        """Down and up again: the new driver loads, the enabled engine unit starts on its release."""
        self.boot += 1
        self.loaded = self.installed
        self.running = self.current if self.enabled else None
        self.restarts = 0

    def run(self, command: str) -> str:
        if command.startswith("# "):  # a comment an operation shows (pyinfra runs it: a no-op)
            return ""
        if command == "cat /proc/sys/kernel/random/boot_id":
            return f"boot-{self.boot}"
        if "&& reboot )" in command:
            self.reboot()
            return ""
        if command.startswith("systemctl start nvidia-"):
            return ""
        if command == "date +%s":
            return str(int(time.time()))
        if command.startswith("systemctl show -p ActiveState"):
            return self.unit()
        if command.startswith("journalctl -u"):
            return self.journal()
        if 'echo "c=$(readlink' in command:
            return "\n".join(f"{k}={RELEASES + v if v else ''}" for k, v in (("c", self.current), ("p", self.previous)))
        if "systemctl restart r1-vllm.service" in command:  # activate: check, install, flip, remember, start
            release = shlex.split(command.split("ln -sfn ", 1)[1])[0].rsplit("/", 1)[-1]
            if release in self.gone:
                raise Fails(f"release {RELEASES}{release} is missing or incomplete (pruned?): nothing was changed")
            if self.current and self.current != release:
                self.previous = self.current
            if ">> /etc/r1deploy/history" in command and self.history[-1:] != [release]:
                self.history.append(release)
            self.current, self.running, self.restarts = release, release, 0
            return ""
        if command.startswith("cat /etc/r1deploy/history"):
            return "\n".join(self.history)
        if command.startswith("( if ! { test -f "):  # is a release complete?
            release = shlex.split(command.split("test -f ", 1)[1])[0].rsplit("/", 2)[-2]
            return "missing" if release in self.gone else "ok"
        if "systemctl stop r1-vllm.service" in command:
            self.running = None
            return ""
        if command.startswith("ln -sfn " + RELEASES):  # after a rollback: previous as it was
            self.previous = command.split()[2].rsplit("/", 1)[-1]
            return ""
        if command.startswith("rm -f /etc/r1deploy/previous"):
            self.previous = None
            return ""
        if "/health" in command and "/v1/models" in command:
            return json.dumps({"data": [{"id": self.model}]}) if self.answers() else "DOWN"
        if "/health && echo UP || echo DOWN" in command:  # rollout._answers: is there anything to drain?
            return "UP" if self.answers() else "DOWN"
        if "/metrics" in command:
            return f"vllm:num_requests_running {self.in_flight}\nvllm:num_requests_waiting 0"
        if "-m r1deploy.serving.warmup" in command:
            return json.dumps({"ok": True, "requests": 12, "failed": 0, "ttft_ms_max": 40, "ttft_ms_median": 20})
        if "-m r1deploy.serving.smoke" in command:  # the agent's own report shape
            report = NodeReport(self.name, "http://127.0.0.1:8000")
            report.add(Check("chat-stream", True, "ok", 90.0, 30.0, 50.0))
            return json.dumps({"ok": True, "targets": [asdict(report)]})
        raise UnknownCommand(f"{self.name}: {command}")


@dataclass
class SimGateway:
    name: str
    workers: list[str] = field(default_factory=list)
    router: str = "up"  # up | down (unit installed, admin API does not answer) | absent (no unit yet)
    nodes: dict[str, SimNode] = field(default_factory=dict)  # worker URL -> node (others answer /health)
    history: list[list[str]] = field(default_factory=list)  # the worker list after every change

    def health(self, url: str) -> bool:
        node = self.nodes.get(url)
        return node.answers() if node else True

    def run(self, command: str) -> str:
        if self.router == "absent" and "vllm-router.service ]; then echo router=none" in command:
            return "router=none"
        if self.router == "down":  # what roles/serve/rollout._router prints when curl cannot connect
            return ("\n000\ncurl=7 inactive http://127.0.0.1:8081 curl: (7) Failed to connect to 127.0.0.1 port "
                    "8081 after 0 ms: Couldn't connect to server ")
        return self._answer(command) + "\ncurl=0 active http://127.0.0.1:8081 "

    def _answer(self, command: str) -> str:
        if "/list_workers" in command:  # vllm-router's shape
            return json.dumps({"urls": self.workers}) + "\n200"
        probes = re.findall(r"curl -fsS -m 5 -o /dev/null (\S+)/health", command)
        if probes:  # roles/serve/rollout.worker_health, from the gateway
            return "\n".join(f"{'up' if self.health(u) else 'down'} {u}" for u in probes)
        found = re.search(r"/(remove|add)_worker\?url=([^' ]+)", command)
        if not found:
            raise UnknownCommand(f"{self.name}: {command}")
        verb, url = found.groups()
        if verb == "remove":
            self.workers = [w for w in self.workers if w != url]
        elif url not in self.workers:
            self.workers.append(url)
        self.history.append(list(self.workers))
        return "ok\n200"


class World:
    """The simulated hosts as a pyinfra inventory; `use()` enters it as the current state."""

    def __init__(self, *sims, data: dict[str, dict] | None = None):
        self.sims = {s.name: s for s in sims}
        self.log: list[tuple[str, str]] = []
        self.inventory = Inventory(([(name, (data or {}).get(name, {})) for name in self.sims], {}))
        self.state = State(self.inventory, Config())
        for target in self.inventory:
            self.state.activate_host(target)
            target.connected = True
            target.run_shell_command = self._shell(target.name)
            # A reboot disconnects and reconnects; facts read the node model (its boot id).
            target.disconnect = lambda: None
            target.connect = lambda *a, **kw: None
            target.get_fact = self._fact(target.name)

    def _shell(self, name: str):
        def run(command, **_kwargs):
            text = command.get_raw_value()
            self.log.append((name, text))
            try:
                return True, Output(self.sims[name].run(text).splitlines())
            except Fails as failed:
                return False, Output(str(failed).splitlines())
        return run

    def _fact(self, name: str):
        def get(cls, *args, **kwargs):
            sim = self.sims[name]
            if cls.__name__ == "BootId":
                return sim.run("cat /proc/sys/kernel/random/boot_id")
            if cls.__name__ == "LoadedDriver":  # the GPU role's reboot decision
                from r1deploy.gpu.nvidia import LoadedDriver
                return LoadedDriver(sim.loaded, True)
            if cls.__name__ == "NvidiaPackages":
                return {"nvidia-open-580": (f"{sim.installed}-0ubuntu1", True)}
            if cls.__name__ == "AptVersions":
                return {"nvidia-open-580": [f"{sim.installed}-0ubuntu1"]}
            raise UnknownCommand(f"{name}: fact {cls.__name__}")
        return get

    def did(self, what: str) -> list[str]:
        """The hosts that ran a command containing `what`, in order."""
        return [name for name, text in self.log if what in text]

    def commands(self, what: str) -> list[str]:
        return [text for _, text in self.log if what in text]

    def use(self, name: str):
        """Run as host `name` (a python.call of its operation)."""
        from contextlib import ExitStack

        stack = ExitStack()
        stack.enter_context(ctx_state.use(self.state))
        stack.enter_context(ctx_inventory.use(self.inventory))
        stack.enter_context(ctx_host.use(self.inventory.get_host(name)))
        return stack


class Clock:
    """Monotonic time that moves only when the code under test sleeps: waits end at once, deadlines
    still hold (monkeypatched over a module's `time`)."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds

    def time(self):
        import time

        return time.time()
