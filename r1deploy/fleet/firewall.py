"""The host firewall (issue 23 item 3): who may reach what on each host, computed from the whole
inventory, rendered as one nftables table (templates/nftables.conf.j2).

Pure: hosts come in as (name, host data, spec). Peers are allowed by IP address only (no name is
resolved when a ruleset loads), so every host a firewall names needs one: `fleet_host_ip`, else
`vllm_host_ip`, else an IP `ssh_hostname`.

The table is r1deploy's own (`inet r1deploy`): loading it replaces only that table, in one atomic
transaction, so other tables (a container runtime's) stay. Its input chain drops by default; a
packet dropped by any base chain is dropped, so "everything else dropped" holds whatever else is
loaded. The SSH rule is the chain's first rule.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from r1deploy.spec import FieldError, Spec
from r1deploy.spec_strings import is_ip

FAMILY, TABLE = "inet", "r1deploy"
CONF = "/etc/nftables.conf"  # what Debian's nftables.service loads at boot
STATE_DIR = "/etc/r1deploy/firewall"
ROLLBACK_UNIT = "r1deploy-firewall-rollback"


@dataclass(frozen=True)
class FwHost:
    name: str
    data: Mapping[str, Any]
    spec: Spec

    @property
    def role(self) -> str:
        return self.spec.fleet.role

    @property
    def address(self) -> str | None:
        return firewall_address(self.data, self.spec)


@dataclass(frozen=True)
class Allow:
    """One accept rule: `proto` "tcp", "udp" or "any" (then every port); no sources: from anywhere."""

    why: str
    proto: str
    ports: tuple[int, ...]
    sources: tuple[str, ...] | None  # None: any source; () : nobody (the rule is left out)


def firewall_address(data: Mapping[str, Any], spec: Spec) -> str | None:
    for candidate in (spec.fleet.host_ip, data.get("vllm_host_ip"), data.get("ssh_hostname")):
        if candidate and is_ip(str(candidate)):
            return str(candidate)
    return None


def _addrs(hosts: Iterable[FwHost]) -> tuple[str, ...]:
    return tuple(sorted({h.address for h in hosts if h.address}))


def allows(me: FwHost, hosts: list[FwHost], monitor: str | None) -> list[Allow]:
    """What may reach `me`, SSH first. `monitor`: the host that runs Prometheus (None: none)."""
    f, m = me.spec.fleet, me.spec.monitor
    others = [h for h in hosts if h.name != me.name]
    watcher = _addrs(h for h in others if h.name == monitor)
    out = [Allow("SSH from the admin networks (fleet_admin_networks)", "tcp",
                 (int(me.data.get("ssh_port") or 22),), tuple(f.admin_networks))]
    if me.role == "node":
        members = _addrs(h for h in others if f.group and h.spec.fleet.group == f.group)
        gateways = _addrs(h for h in others if h.role == "gateway")
        out.append(Allow("vLLM API from the gateways, the serving group and the monitor host", "tcp",
                         (me.spec.vllm.port,), tuple(sorted({*gateways, *members, *watcher}))))
        if members:  # vLLM/torch/NCCL between members: fixed and ephemeral ports alike
            out.append(Allow(f"everything between members of serving group {f.group}", "any", (), members))
        pd_set = me.spec.vllm.pd_set
        pd_peers = _addrs(h for h in others if pd_set and h.spec.vllm.pd_set == pd_set)
        if pd_peers:  # NIXL's side channel (a port per DP rank) and UCX's KV (over TCP: ephemeral ports)
            out.append(Allow(f"everything between members of P/D set {pd_set}", "any", (), pd_peers))
        if me.name in me.spec.model.seed_nodes:
            nodes = _addrs(h for h in others if h.role == "node")
            out.append(Allow("the LAN mirror (weights fan-out) from the nodes", "tcp", (me.spec.model.seed_port,), nodes))
        if me.spec.vllm.device == "cuda":
            out.append(Allow("DCGM exporter from the monitor host", "tcp", (m.dcgm_exporter_port,), watcher))
    else:
        out.append(Allow("the edge (nginx) from anywhere: clients", "tcp", (me.spec.gateway.port,), None))
        out.append(Allow("the router's metrics from the monitor host", "tcp", (me.spec.gateway.prometheus_port,), watcher))
    if m.enable:
        out.append(Allow("node exporter from the monitor host", "tcp", (m.node_exporter_port,), watcher))
    if me.name == monitor:
        out.append(Allow("Prometheus from the admin networks", "tcp", (m.port,), tuple(f.admin_networks)))
    return out


def _family(source: str) -> str:
    return "ip6" if ipaddress.ip_network(source, strict=False).version == 6 else "ip"


def _set(items: Iterable[Any]) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def rule_lines(allow: Allow) -> list[str]:
    """nft rule text for one Allow (one line per address family it names)."""
    match = "" if allow.proto == "any" else f"{allow.proto} dport {_set(allow.ports)} "
    comment = f'comment "{allow.why}"'
    if allow.sources is None:
        return [f"{match}accept {comment}"]
    lines = []
    for fam in ("ip", "ip6"):
        nets = [s for s in allow.sources if _family(s) == fam]
        if nets:
            lines.append(f"{fam} saddr {_set(nets)} {match}accept {comment}")
    return lines


def render_ruleset(me: FwHost, hosts: list[FwHost], monitor: str | None) -> str:
    from r1deploy.serving.render import render_template

    ssh, *rest = allows(me, hosts, monitor)
    return render_template("nftables.conf.j2", host=me.name, family=FAMILY, table=TABLE, ssh=rule_lines(ssh),
                           rules=[line for a in rest for line in rule_lines(a)])


def firewall_errors(hosts: list[FwHost]) -> list[FieldError]:
    """Inventory-wide: a host with the firewall on needs admin networks, and every host some
    firewall names needs an IP address."""
    errors = []
    on = [h for h in hosts if h.spec.fleet.firewall_on]
    for h in on:
        if not h.spec.fleet.admin_networks:
            errors.append(FieldError(h.name, "fleet_admin_networks",
                                     "the host firewall is on (fleet_firewall; the default in prod): name the "
                                     "networks operators SSH from, e.g. ['10.0.0.0/24'], else SSH would be closed"))
    if on:
        for h in hosts:
            if h.address is None:
                errors.append(FieldError(h.name, "fleet_host_ip",
                                         "the host firewall allows peers by IP address: set fleet_host_ip "
                                         "(or an IP vllm_host_ip / ssh_hostname)"))
    return errors
