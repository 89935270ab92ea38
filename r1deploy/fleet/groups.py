"""Serving groups: nodes that together serve one replica (a head and its workers). Pure.

An inventory declares a group on every member (``fleet_group = "r1-a"``, ``fleet_group_head =
"gpu-h100-01"``). The head (node rank 0) runs the API server; the workers run vLLM headless
and join it over the fleet network. Members are ranked head first, then by host name, so the
ranks do not depend on the order hosts are listed in.

Checked across hosts before any connection (``group_errors``): the members serve the same
model, revision and vLLM, have the same GPUs, are as many as the plan's node count
(``plan_nodes``) and know their fleet address (``vllm_host_ip``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from r1deploy.serving.group import Member, ServingGroup
from r1deploy.spec import FieldError, Spec

# What every member must agree on, as (inventory key, how to read it from a spec).
_SAME = [
    ("model_repo_id", lambda s: s.model.repo_id),
    ("model_revision", lambda s: s.model.revision),
    ("install_vllm_package", lambda s: s.install.vllm_package),
    ("install_vllm_version", lambda s: s.install.vllm_version),
    ("plan_gpu", lambda s: s.plan.gpu or s.gpu.expected_model),
    ("plan_gpus_per_node", lambda s: s.plan.gpus_per_node or s.gpu.expected_count),
    ("plan_nodes", lambda s: s.plan.nodes),
    ("vllm_port", lambda s: s.vllm.port),
    ("fleet_group_master_port", lambda s: s.fleet.group_master_port),
    ("fleet_group_dp_rpc_port", lambda s: s.fleet.group_dp_rpc_port),
]


def serving_groups(specs: Mapping[str, Spec]) -> dict[str, ServingGroup]:
    """Every group of an inventory (validated or not: call ``group_errors`` first)."""
    names: dict[str, list[str]] = {}
    for host, spec in specs.items():
        if spec.fleet.group:
            names.setdefault(spec.fleet.group, []).append(host)
    groups = {}
    for name, hosts in names.items():
        head = specs[hosts[0]].fleet.group_head or hosts[0]
        ordered = sorted(hosts, key=lambda h: (h != head, h))
        members = tuple(Member(h, i, specs[h].vllm.host_ip) for i, h in enumerate(ordered))
        groups[name] = ServingGroup(name, head, members)
    return groups


def group_of(specs: Mapping[str, Spec], host: str) -> ServingGroup | None:
    name = specs[host].fleet.group
    return serving_groups(specs)[name] if name else None


def group_errors(specs: Mapping[str, Spec]) -> list[FieldError]:
    """Cross-host problems of an inventory's groups, each naming the host and the key to fix."""
    errors: list[FieldError] = []
    for host, spec in specs.items():
        if spec.plan.nodes > 1 and not spec.fleet.group and spec.fleet.role == "node":
            errors.append(FieldError(host, "fleet_group", f"plan_nodes = {spec.plan.nodes}: one replica spans "
                                     f"{spec.plan.nodes} nodes, so this node must be in a serving group"))
    for group in serving_groups(specs).values():
        errors += _errors_of(group, specs)
    return errors


def _errors_of(group: ServingGroup, specs: Mapping[str, Spec]) -> list[FieldError]:
    head = group.head
    out: list[FieldError] = []
    for m in group.members:
        spec = specs[m.host]
        named = spec.fleet.group_head
        if named is None:
            out.append(FieldError(m.host, "fleet_group_head", f"group {group.name!r} needs its head named"))
        elif named != head:
            out.append(FieldError(m.host, "fleet_group_head", f"{named!r}, but other members of group "
                                  f"{group.name!r} name {head!r}"))
        if spec.fleet.role != "node":
            out.append(FieldError(m.host, "fleet_role", f"a member of group {group.name!r} must be a node"))
        if not m.ip:
            out.append(FieldError(m.host, "vllm_host_ip", f"members of group {group.name!r} need their fleet "
                                  "address: the group's internal ports bind to it"))
    if head not in specs:
        return [*out, FieldError(group.members[0].host, "fleet_group_head", f"{head!r} is not a host of this inventory")]
    if specs[head].fleet.group != group.name:
        other = specs[head].fleet.group
        return [*out, FieldError(head, "fleet_group", f"{other!r}, but it is named head of group {group.name!r} "
                                 "(one group per host)")]
    head_spec = specs[head]
    for m in group.members[1:]:
        for key, read in _SAME:
            mine, theirs = read(specs[m.host]), read(head_spec)
            if mine != theirs:
                out.append(FieldError(m.host, key, f"{mine!r}, but the head {head!r} of group {group.name!r} "
                                      f"has {theirs!r}: members of a group serve one replica"))
    nodes = head_spec.plan.nodes
    if group.size != nodes:
        out.append(FieldError(head, "plan_nodes", f"{nodes}, but group {group.name!r} has {group.size} member(s) "
                              f"({', '.join(group.hosts)}): one replica spans plan_nodes nodes"))
    return out


# --------------------------------------------------------------------------- lifecycle


def rollout_units(hosts: list[str], specs: Mapping[str, Spec]) -> list[list[str]]:
    """Hosts in rollout batches: a single node alone, a group whole (head first), in the order
    the hosts come; a group member not among ``hosts`` still brings its whole group."""
    groups = serving_groups(specs)
    units: list[list[str]] = []
    seen: set[str] = set()
    for host in hosts:
        if host in seen:
            continue
        name = specs[host].fleet.group
        unit = groups[name].hosts if name else [host]
        units.append(unit)
        seen.update(unit)
    return units


def is_group_worker(spec: Spec, host: str) -> bool:
    """A group member other than the head: runs vLLM headless, serves no API."""
    return bool(spec.fleet.group) and spec.fleet.group_head != host


def gateway_targets(specs: Mapping[str, Spec]) -> list[str]:
    """Nodes a gateway routes to: single nodes and group heads."""
    return [h for h, s in specs.items() if s.fleet.role == "node" and not is_group_worker(s, h)]


@dataclass(frozen=True)
class GroupHealth:
    status: str  # "ok", "down" or "unknown" (could not check)
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def group_health(group: ServingGroup, head_answers: bool | None,
                 unit_states: Mapping[str, str | None]) -> GroupHealth:
    """Health of a group: the head answers (/health and /v1/models) and every member's unit runs.

    ``head_answers`` None and a unit state None mean "could not check" (host unreachable):
    the group is then "unknown" unless something checked is already down."""
    problems, unknown = [], []
    for m in group.members:
        state = unit_states.get(m.host)
        role = m.role
        if state is None:
            unknown.append(f"{m.host} ({role}): unit state could not be read")
        elif state != "active":
            problems.append(f"{m.host} ({role}): r1-vllm.service is {state}")
    if head_answers is None:
        unknown.append(f"{group.head}: the API could not be probed")
    elif not head_answers:
        problems.append(f"{group.head} (head): the API does not answer")
    if problems:
        return GroupHealth("down", problems + unknown)
    return GroupHealth("unknown", unknown) if unknown else GroupHealth("ok", [])


# --------------------------------------------------------------------------- group rollout


def stop_order(group: ServingGroup) -> list[str]:
    """The head first: its API goes away before the ranks it waits on, so nothing hangs on it."""
    return group.hosts


def start_order(group: ServingGroup) -> list[str]:
    """Workers first, then the head. In both launch modes the headless ranks connect to the head
    (multi-node: torch.distributed's store on --master-addr:--master-port; data-parallel: the
    head's --data-parallel-rpc-port) and retry until it listens, so started first they are
    waiting when the head's engine reaches the rendezvous. A worker started alone against a
    running head hangs (bench/results/multinode): members only ever start together."""
    return group.hosts[1:] + group.hosts[:1]


def missing_members(group: ServingGroup, present: list[str] | set[str]) -> list[str]:
    """Members this run does not deploy (--limit): a group rolls whole or not at all."""
    return [h for h in group.hosts if h not in present]


@dataclass(frozen=True)
class GroupStart:
    status: str  # "up", "starting" or "failed"
    member: str | None = None  # the member that failed
    reason: str = ""


def group_start(group: ServingGroup, head_answers: bool, units: Mapping[str, tuple[str, bool]]) -> GroupStart:
    """Where a starting group stands. ``units``: per member (systemd ActiveState, crash-looping
    since our start). A crash-looping, failed or exited unit fails the group at once, naming the
    member (a dead worker leaves the head's /health at 200: only the units show it); "up" is
    group_health's "ok": the head answers and every unit runs."""
    for m in group.members:
        state, looping = units[m.host]
        if looping or state not in ("active", "activating", "reloading"):
            return GroupStart("failed", m.host, "r1-vllm.service is "
                              + ("crash-looping" if looping and state != "failed" else state))
    health = group_health(group, head_answers, {h: s for h, (s, _) in units.items()})
    return GroupStart("up") if health.ok else GroupStart("starting", None, "; ".join(health.problems))
