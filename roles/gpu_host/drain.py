"""A driver reboot is a rollout turn of the node's model (issue 21 item 1).

The GPU role lays its reboot out as one operation per batch (`reboot_batches`: the rollout's
batches per model, of gpu_reboot_batch_size replicas, the first a canary), so batch i+1 starts
only after every node of batch i is back. A node that must reboot (roles/gpu_host/ops.py
`_reboot`, NVIDIA and AMD alike) takes its turn there:

  before: the outage refusal (a model on one replica reboots only with rollout_allow_outage), the
          live check that another replica serves (roles/serve/rollout.ensure_another_serves), the
          drain from every gateway routing to it (the serve rollout's drain_from + wait_drained);
  reboot: and wait for the new boot (ops.py);
  after:  the GPU services started, the GPU gate on the new driver, vLLM healthy (its unit
          starts on boot), and the rejoin (the serve rollout's rejoin), before the next batch.

A node that was not serving before (a first deploy) only reboots: the stage's gate follows, and
its serve turn puts it in rotation (DRAINED). A failed turn stops the rollout: later batches, and
the serve stage's turns, hold (roles/serve/rollout.ROLLOUT).
"""

from __future__ import annotations

from collections.abc import Iterator

from pyinfra.api import FunctionCommand, OperationError
from pyinfra.context import ctx_host
from r1deploy.roles._rollout import DRAINED

# Per host, what its turn found before the reboot: {"gateways", "url", "serving", "head"}.
_TURNS: dict[str, dict] = {}


def reboot_batches(name: str) -> tuple[int | None, int]:
    """(this node's reboot batch, how many there are) over the nodes this run deploys."""
    from r1deploy.roles._fleet import fleet_view

    from r1deploy.fleet import rollout as core

    deploying, _, _ = fleet_view()
    plan = core.plan_batches(deploying, size_of=lambda s: s.gpu.reboot_batch_size)
    return plan.batch_of(name), len(plan.batches)


def _replica(spec, target) -> tuple[str, bool]:
    """(the worker URL gateways route to for this node's replica, whether this node is its head):
    a serving group is one replica behind its head's URL."""
    from pyinfra import inventory
    from r1deploy.roles._fleet import address
    from r1deploy.roles._group import host_group
    from r1deploy.roles._spec import host_spec

    from r1deploy.fleet import rollout as core

    group = host_group(spec)
    if group is None:
        return core.node_url(spec, address(target)), True
    head = inventory.get_host(group.head)
    return core.node_url(host_spec(head), address(head)), group.head == target.name


def _fail(host, why: str) -> bool:
    from pyinfra import logger
    from r1deploy.roles.serve.rollout import ROLLOUT

    ROLLOUT.stop(host.name, f"reboot: {why}")
    host.log_styled(f"reboot turn: {why}", fg="red", log_func=logger.error)
    return False


def _before_reboot(state, host, why: str) -> bool:
    """Refuse (an outage, another run's drain, an earlier failed turn) or drain; False stops this host."""
    from r1deploy.roles._fleet import address, connected, fleet_view
    from r1deploy.roles._spec import host_spec
    from r1deploy.roles.serve.rollout import (
        ROLLOUT,
        PhaseFailed,
        _unit_state,
        drain_from,
        ensure_another_serves,
        listed_workers,
        wait_drained,
    )

    from r1deploy.fleet import rollout as core
    from r1deploy.serving.edge import engine_local_url, router_admin

    with ctx_host.use(host):
        spec = host_spec()
        if spec.fleet.role != "node":
            return True
        if ROLLOUT.stopped_by:
            host.log_styled(f"not rebooted: {ROLLOUT.held_message()}", fg="red")
            return False
        _, gateways, nodes = fleet_view()
        url, head = _replica(spec, host)
        targets = [(connected(gw), router_admin(s)) for gw, s in gateways
                   if gw in core.gateways_of(url, gateways, nodes)]
        listed = any(url in listed_workers(gw, admin) for gw, admin in targets)
        serving = listed or _unit_state().active == "active"
        single = core.replicas(spec.model.name, [(n, s) for n, s, _ in nodes]) == 1
        if serving and single and not spec.rollout.allow_outage:
            return _fail(host, f"only {host.name} serves {spec.model.name}: rebooting it ({why}) is an outage; "
                               "set rollout_allow_outage = True to accept it")
        try:
            if listed:
                ensure_another_serves(spec, targets, url)
            notes = drain_from(targets, url)
            drained = wait_drained(engine_local_url(spec, address(host)), spec.rollout.drain_timeout_s) \
                if serving else "not serving"
        except (PhaseFailed, OperationError) as exc:
            return _fail(host, f"not drained, not rebooted: {exc}")
        _TURNS[host.name] = {"gateways": targets, "url": url, "serving": serving, "head": head}
        host.log(f"drained for the reboot: {'; '.join(notes + [drained])}")
        return True


def gate_now(expectations, vendor: str, simulated: bool, python: str | None) -> tuple[bool, str]:
    """The GPU gate on facts read now (ops._gate); a seam for the simulated hosts' tests."""
    from r1deploy.roles.gpu_host.ops import _gate

    return _gate(expectations, vendor, simulated, python)


def _after_reboot(state, host, services: list[str], gate: tuple) -> bool:
    """Back on the new driver: services, gate, vLLM healthy, rejoin; False stops this host and the rollout."""
    import time

    from r1deploy.roles._rollout import remote
    from r1deploy.roles._spec import host_spec
    from r1deploy.roles.serve.rollout import PhaseFailed, rejoin, wait_healthy

    from r1deploy.fleet import rollout as core

    turn = _TURNS.get(host.name)
    if turn is None:  # not a serving node
        return True
    with ctx_host.use(host):
        spec = host_spec()
        try:
            if services:
                remote("systemctl start " + " ".join(services), "GPU services")
            passed, table = gate_now(*gate)
            if not passed:
                return _fail(host, f"GPU gate failed after the reboot, out of rotation:\n{table}")
            host.log(f"GPU gate passed after the reboot:\n{table}")
            if not turn["serving"]:
                DRAINED.add(host.name)  # its serve turn proves it and puts it in rotation
                return True
            if not turn["head"]:
                return True  # a group's worker: its head proves the group and rejoins it
            host.log(f"vLLM after the reboot: {wait_healthy(spec, time.time())}")
            notes = rejoin(turn["gateways"], turn["url"], core.startup_timeout_s(spec))
            host.log("back in rotation" + (f" ({'; '.join(notes)})" if notes else ""))
        except (PhaseFailed, OperationError) as exc:
            return _fail(host, f"not back after the reboot, out of rotation: {exc}")
    return True


def before_reboot(host, why: str) -> Iterator:
    """The turn's commands before the reboot (a refusal stops this host before it reboots)."""
    yield FunctionCommand(_before_reboot, (why,), {})


def after_reboot(host, services: list[str], gate: tuple) -> Iterator:
    """The turn's commands after the new boot: gate, healthy, rejoin."""
    yield FunctionCommand(_after_reboot, (services, gate), {})


def in_batches(op, name: str, **kwargs) -> None:
    """`op` once per reboot batch, on every node alike (pyinfra orders operations by position):
    each runs only on the nodes of its batch, so batch i+1 starts after batch i is back."""
    from pyinfra import host

    mine, count = reboot_batches(host.name)
    for index in range(count):
        op(name=f"{name}, batch {index + 1}/{count}", _if=lambda i=index: mine == i, **kwargs)
