"""The inventory as the rollout sees it: nodes, gateways, and how they reach each other."""

from __future__ import annotations

from pyinfra import inventory
from r1deploy.roles._spec import host_spec

from r1deploy.fleet.rollout import fleet_address


def address(target) -> str:
    """A node's fleet address: its serving IP, else its SSH address, else its name."""
    return fleet_address(target.name, target.data)


def fleet_view():
    """(nodes this run deploys, in inventory order; every gateway; every node with its address)."""
    activated = set(inventory.iter_activated_hosts())
    specs = [(h, host_spec(h)) for h in inventory]
    deploying = [(h.name, s) for h, s in specs if h in activated and s.fleet.role == "node"]
    gateways = [(h.name, s) for h, s in specs if s.fleet.role == "gateway"]
    nodes = [(h.name, s, address(h)) for h, s in specs if s.fleet.role == "node"]
    return deploying, gateways, nodes


def connected(name: str):
    """Another inventory host, connected (the rollout reaches gateways also under --limit)."""
    target = inventory.get_host(name)
    if not target.connected:
        target.connect(reason="rollout", raise_exceptions=True)
    return target
