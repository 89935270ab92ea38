"""Run a pyinfra @deploy against hosts whose facts are given, and read the commands it plans.

Built on pyinfra's public API (Inventory, State, add_deploy, state.ops): nothing connects
anywhere. Each host answers `host.get_fact` from a `World` (what the host looks like); a
fact the World does not know fails the test, so tests say everything the role looks at.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api import Config, FileUploadCommand, FunctionCommand, Inventory, State, StringCommand
from pyinfra.api.deploy import add_deploy
from pyinfra.context import ctx_host, ctx_inventory, ctx_state
from pyinfra.facts import files as file_facts
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import TmpDir
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus
from r1deploy.roles.gpu_host import facts as gpu_facts


class UnknownFact(AssertionError):
    pass


@dataclass
class World:
    """A host's state as facts see it. `facts` maps a fact class to its value (or to a
    callable taking the fact's keyword arguments); files, services and packages are kept
    as plain data and turned into pyinfra's fact shapes here."""

    facts: dict[type, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # path -> content
    services: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # name -> (running, enabled)
    packages: dict[str, tuple[str, bool]] = field(default_factory=dict)  # name -> (version, held)
    repo: dict[str, list[str]] = field(default_factory=dict)  # package -> versions offered

    def answer(self, cls: type, kwargs: dict) -> Any:
        path = kwargs.get("path")
        if cls is file_facts.File:
            return {"mode": 644, "user": "root", "group": "root", "size": len(self.files[path])} \
                if path in self.files else None
        if cls is file_facts.Directory:
            return {"mode": 755, "user": "root", "group": "root"} \
                if any(p.startswith(path.rstrip("/") + "/") for p in self.files) else None
        if cls is file_facts.Sha256File:
            return hashlib.sha256(self.files[path].encode()).hexdigest() if path in self.files else None
        if cls is file_facts.Sha1File:
            return hashlib.sha1(self.files[path].encode()).hexdigest() if path in self.files else None
        if cls in (SystemdStatus, SystemdEnabled):
            which = 0 if cls is SystemdStatus else 1
            names = {s: s.removesuffix(".service") for s in kwargs["services"]}
            return {s: self.services[n][which] for s, n in names.items() if n in self.services}
        if cls is DebPackages:
            return {name: {version} for name, (version, _) in self.packages.items()}
        if cls is gpu_facts.NvidiaPackages:
            return dict(self.packages)
        if cls is gpu_facts.AptVersions:
            return {p: self.repo[p] for p in kwargs["packages"] if p in self.repo}
        if cls is TmpDir:
            return "/tmp"
        if cls in self.facts:
            value = self.facts[cls]
            return value(**kwargs) if callable(value) else value
        raise UnknownFact(f"the test did not say what {cls.__name__}({kwargs}) returns")


def _seed(target, world: World) -> None:
    # pyinfra's operations ask the current host for facts; answer them from the World.
    target.get_fact = lambda cls, *args, **kwargs: world.answer(cls, kwargs)
    target.connected = True


def plan(deploy_func, worlds: dict[str, tuple[dict, World]]) -> tuple[State, dict[str, list[str]]]:
    """Add `deploy_func` for hosts name -> (host data, World); return the state and each
    host's planned commands as text, in operation order."""
    inventory = Inventory(([(name, data) for name, (data, _) in worlds.items()], {}))
    state = State(inventory, Config())
    for h in inventory:
        _seed(h, worlds[h.name][1])
        state.activate_host(h)  # what connecting would do
    with ctx_inventory.use(inventory):  # roles read the fleet (roles/_fleet.fleet_view)
        add_deploy(state, deploy_func)
    return state, {h.name: planned_commands(state, h) for h in inventory}


def render(command) -> str:
    if isinstance(command, StringCommand):
        return command.get_raw_value()
    if isinstance(command, FileUploadCommand):
        src = command.src
        body = src.getvalue() if hasattr(src, "getvalue") else str(src)
        return f"upload {command.dest}\n{body}"
    if isinstance(command, FunctionCommand):
        return f"python {command.function.__name__}{command.args!r}"
    return repr(command)


def planned_commands(state: State, target) -> list[str]:
    out = []
    with ctx_state.use(state), ctx_host.use(target):
        for op_hash in state.get_op_order():
            op = state.ops.get(target, {}).get(op_hash)
            if op is None:
                continue
            name = sorted(state.op_meta[op_hash].names)[0]
            out.extend(f"[{name}] {render(c)}" for c in op.command_generator())
    return out


def changed_ops(state: State, target) -> list[str]:
    """Names of the operations that would change the host (pyinfra's own prepare-time verdict)."""
    return [sorted(state.op_meta[h].names)[0] for h in state.get_op_order()
            if h in state.ops.get(target, {}) and state.ops[target][h].operation_meta._maybe_is_change]
