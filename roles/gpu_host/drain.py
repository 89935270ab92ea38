"""A reboot is a rollout: a node that must reboot for a driver change leaves the gateways first.

Called by the GPU role right before it reboots a host (NVIDIA and AMD alike, roles/gpu_host/ops.py
`_reboot`). It takes the node out of every gateway that routes to it and waits until vLLM has no
request in flight (the rolling update's own drain, roles/serve/rollout.py). After the reboot the
engine unit starts on boot; the rollout stage then gives the node its turn — health, warm-up,
smoke — and only that puts it back in rotation (roles/serve: a node drained here always gets one).
"""

from __future__ import annotations

from collections.abc import Iterator

from pyinfra.api import FunctionCommand

# Nodes drained for a reboot in this run: the rollout stage rejoins them after proving them.
DRAINED: set[str] = set()


def _drain(name: str) -> bool:
    from pyinfra import host

    from r1deploy.fleet import rollout as core
    from r1deploy.serving.edge import engine_local_url, router_admin
    from roles._fleet import address, connected, fleet_view
    from roles._spec import host_spec
    from roles.serve.rollout import drain_from, wait_drained

    spec = host_spec()
    if spec.fleet.role != "node":
        return True
    _, gateways, nodes = fleet_view()
    url = core.node_url(spec, address(host))
    targets = [(connected(gw), router_admin(s)) for gw, s in gateways if gw in core.gateways_of(url, gateways, nodes)]
    notes = drain_from(targets, url)
    drained = wait_drained(engine_local_url(spec, address(host)), spec.rollout.drain_timeout_s)
    host.log(f"drained for the reboot: {'; '.join(notes + [drained])}")
    DRAINED.add(name)
    return True


def drain_before_reboot(host, why: str) -> Iterator:
    """Commands to run before the reboot: the drain (a failure stops this host before it reboots)."""
    yield FunctionCommand(_drain, (host.name,), {})
