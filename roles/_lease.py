"""Issue 21 item 6: the converge's lease on each gateway it touches (r1deploy/fleet/lease.py).

`hold()` is an operation every host runs first: it takes the lease of every gateway that routes to
the host (its own, on a gateway) when executing, once per gateway per run, and yields nothing, so
a converge that changes nothing still reports no change. A refused lease fails the host before
anything of it was touched. `let_go()`, the last operation, and an exit handler give the leases
back (only this run's: the token says whose).
"""

from __future__ import annotations

import atexit
import getpass
import os
import socket
import time
import uuid

from gevent.lock import Semaphore
from pyinfra import host, state
from pyinfra.api import FunctionCommand, operation
from r1deploy.roles._rollout import remote

from r1deploy.fleet import lease as core

TOKEN = uuid.uuid4().hex  # this run
PATH = core.LEASE_DIR
HELD: dict[str, object] = {}  # gateway name -> its host, leases this run holds
_GUARD = Semaphore()  # hosts take leases in parallel greenlets: one at a time here


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def take(gateway, wait_s: int, stale_s: int) -> str | None:
    """Take `gateway`'s lease (a pyinfra host) for this run; None, or why not (naming the holder)."""
    with _GUARD:
        if gateway.name in HELD:
            return None
        controller, start = socket.gethostname(), time.monotonic()
        while True:
            taken, holder, now = core.parse_answer(remote(
                core.acquire_command(controller, getpass.getuser(), os.getpid(), TOKEN, PATH), "converge lease",
                target=gateway))
            if taken:
                HELD[gateway.name] = gateway
                return None
            if core.is_stale(holder, now, stale_s, controller, _alive):
                remote(core.take_over_command(holder.token if holder else "", PATH), "stale lease", target=gateway)
                gateway.log(f"took over a stale converge lease ({holder.describe(now) if holder else 'unreadable'})")
                continue
            waited = int(time.monotonic() - start)
            if waited >= wait_s:
                return core.refusal(gateway.name, holder, now, waited, PATH)
            if waited == 0:
                gateway.log(f"waiting up to {wait_s}s for the converge lease: "
                            f"{holder.describe(now) if holder else 'held'}")
            time.sleep(min(5, max(1, wait_s - waited)))


def release_all() -> None:
    for name, gateway in list(HELD.items()):
        try:
            remote(core.release_command(TOKEN, PATH), "release the converge lease", target=gateway)
        except Exception as exc:  # (at exit: the stale rules free it on the next run)
            print(f"{name}: could not release the converge lease: {exc}")
        HELD.pop(name, None)


atexit.register(release_all)


def _refuse(state, host, why: str) -> bool:
    from pyinfra import logger

    host.log_styled(why, fg="red", log_func=logger.error)
    return False


@operation(is_idempotent=False)
def hold(gateways: list[str], wait_s: int, stale_s: int):
    """Take the lease of each gateway named (when executing; nothing to show before)."""
    if not state.is_executing:
        return
    from r1deploy.roles._fleet import connected

    for name in gateways:
        why = take(connected(name), wait_s, stale_s)
        if why:
            yield FunctionCommand(_refuse, (why,), {})
            return


@operation(is_idempotent=False)
def let_go():
    """Give back this run's leases (the first host to get here does it for all)."""
    if state.is_executing:
        release_all()
    return
    yield


def my_gateways(spec, name: str) -> list[str]:
    """The gateways whose lease this host's part of the converge needs."""
    from r1deploy.roles._fleet import address, fleet_view

    from r1deploy.fleet import rollout as core_rollout

    if spec.fleet.role == "gateway":
        return [name]
    if spec.fleet.role != "node":
        return []
    _, gateways, nodes = fleet_view()
    return core_rollout.gateways_of(core_rollout.node_url(spec, address(host)), gateways, nodes)
