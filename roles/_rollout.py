"""Per-host bookkeeping of a rollout: which operations changed something, and remote checks.

pyinfra counts every command-yielding operation as a change, so health waits and smoke tests
run only `_if=host_changed()`: a converge that changes nothing also checks nothing it did not
touch, and reports no changes. Fleet-wide checks outside a rollout are `r1deploy smoke`/drift.
"""

from __future__ import annotations

import shlex
from collections import defaultdict

from pyinfra import host
from pyinfra.api import OperationError, StringCommand
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments

from r1deploy.serving.render import ROUTER_SERVICE

_changes: dict[str, list] = defaultdict(list)
# Nodes drained for a driver reboot (roles/gpu_host/drain.py) and not put back by it (not serving
# before): the serve stage's turn proves and rejoins them.
DRAINED: set[str] = set()


def track(*ops):
    """Remember operations whose change means this host is being rolled out."""
    _changes[host.name].extend(ops)
    return ops[0] if len(ops) == 1 else ops


def host_changed():
    name = host.name
    return lambda: any(op.did_change() for op in _changes[name])


def connector_args(target=None) -> dict:
    """The host's privilege settings (`_sudo` from the inventory, ...) as operations and facts get
    them: host.run_shell_command alone ignores them and would run as the bare login user."""
    target = host if target is None else target  # (the context proxy has no truth value)
    current = dict(target.current_op_global_arguments or {}) if target is host else {}
    args, _ = pop_global_arguments(target.state, target, current)
    return {key: value for key, value in args.items() if key in CONNECTOR_ARGUMENT_KEYS}


def remote(command: str, what: str, sudo_user: str | None = None, target=None) -> str:
    """Run a command on the current (or given) host from a python.call; raise with its output.

    `target` is another inventory host (a gateway the rollout drains a node from); it is
    connected on first use, so `--limit node2` still drains node2 from its gateways."""
    target = host if target is None else target
    if not target.connected:
        target.connect(reason="rollout", raise_exceptions=True)
    if sudo_user:
        command = f"runuser -u {sudo_user} -- sh -c {shlex.quote(command)}"
    ok, output = target.run_shell_command(StringCommand(command), print_output=False, print_input=False,
                                          **connector_args(target))
    text = "\n".join(output.stdout_lines) if hasattr(output, "stdout_lines") else str(output)
    if not ok:
        err = "\n".join(getattr(output, "stderr_lines", []))
        raise OperationError(f"{what} failed on {target.name}:\n{text}\n{err}".strip())
    return text


def wait_router(admin: str, timeout_s: int) -> None:
    """The router answers /health once its workers do (it waits for them at start)."""
    remote(f"for i in $(seq {timeout_s}); do curl -fsS -m 2 {admin}/health >/dev/null "
           f"&& exit 0; sleep 1; done; journalctl -u {ROUTER_SERVICE} -n 20 --no-pager -o cat; exit 1",
           "gateway health")
