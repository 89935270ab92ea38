"""P/D sets: prefill and decode replicas of one model that serve together (issue 25). Pure.

An inventory declares a set on each member (``vllm_pd_set = "r1-pd"``, ``vllm_pd_role =
"prefill"`` or ``"decode"``). A replica is a single node or a serving group (its head serves the
API; its workers carry the same role). Checked across hosts before any connection
(``pd_set_errors``): both sides present, and every member agrees with the set's first prefill
replica on what the KV cache moved between them depends on (model, revision, vLLM, block size, KV
dtype). ``pd_gateway_problems``: a gateway routes to one whole set or to no set at all (vllm-router
in P/D mode sends every request to a prefill node, then to a decode node).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from r1deploy.fleet.rollout import gateway_workers, node_url
from r1deploy.spec import FieldError, Spec

Node = tuple[str, Spec, str]  # (inventory name, spec, fleet address)


def block_size(spec: Spec) -> tuple[str, Any]:
    """(the key the operator wrote, its value) of vLLM's --block-size; vLLM's default where unset."""
    for name in ("block-size", "block_size"):
        if name in spec.vllm.extra_args:
            return f"vllm_extra_args[{name!r}]", spec.vllm.extra_args[name]
    return "vllm_extra_args['block-size']", None


# What both sides must agree on, as (inventory key, how to read it): the decode side reads KV blocks
# the prefill side wrote, so the weights, the engine that lays the blocks out, their size and dtype
# are one (plan_fp8 decides the KV dtype the plan renders; vllm_kv_cache_dtype overrides it).
_SAME: list[tuple[str, Callable[[Spec], Any]]] = [
    ("model_repo_id", lambda s: s.model.repo_id),
    ("model_revision", lambda s: s.model.revision),
    ("model_served_name", lambda s: s.model.name),
    ("quant_scheme", lambda s: s.quant.scheme),
    ("install_vllm_package", lambda s: s.install.vllm_package),
    ("install_vllm_version", lambda s: s.install.vllm_version),
    ("vllm_dtype", lambda s: s.vllm.dtype),
    ("vllm_kv_cache_dtype", lambda s: s.vllm.kv_cache_dtype),
    ("plan_fp8", lambda s: s.plan.fp8),
    ("vllm_kv_connector", lambda s: s.vllm.kv_connector),
    ("install_pd_packages", lambda s: s.install.pd_packages),
]


@dataclass(frozen=True)
class PdSet:
    name: str
    prefill: tuple[str, ...]  # replicas: single nodes and group heads, by name
    decode: tuple[str, ...]
    members: tuple[str, ...]  # every host of the set, group workers included

    @property
    def reference(self) -> str:
        """The member the others are compared with: the first prefill replica (else the first member)."""
        return (self.prefill or self.members)[0]


def _is_replica(spec: Spec, host: str) -> bool:
    return not spec.fleet.group or spec.fleet.group_head == host


def pd_sets(specs: Mapping[str, Spec]) -> dict[str, PdSet]:
    """Every P/D set of an inventory, members by name (validated or not: call pd_set_errors first)."""
    hosts: dict[str, list[str]] = {}
    for host in sorted(specs):
        name = specs[host].vllm.pd_set
        if name and specs[host].fleet.role == "node":
            hosts.setdefault(name, []).append(host)
    return {name: PdSet(name, *(tuple(h for h in members if specs[h].vllm.pd_role == role
                                      and _is_replica(specs[h], h)) for role in ("prefill", "decode")),
                        tuple(members))
            for name, members in hosts.items()}


def pd_set_errors(specs: Mapping[str, Spec]) -> list[FieldError]:
    """Cross-host problems of the inventory's P/D sets, each naming the host and the key to fix."""
    errors: list[FieldError] = []
    for pd in pd_sets(specs).values():
        errors += _sides(pd)
        ref = specs[pd.reference]
        for host in pd.members:
            if host == pd.reference:
                continue
            errors += _disagreements(pd, host, specs[host], ref)
    return errors + _group_roles(specs)


def _sides(pd: PdSet) -> list[FieldError]:
    first = pd.members[0]
    if not pd.prefill:
        return [FieldError(first, "vllm_pd_role", f"P/D set {pd.name!r} ({', '.join(pd.members)}) has no prefill "
                           "replica: no node would compute a prompt; set vllm_pd_role = 'prefill' on one")]
    if not pd.decode:
        return [FieldError(first, "vllm_pd_role", f"P/D set {pd.name!r} ({', '.join(pd.members)}) has no decode "
                           "replica: the prefill side's KV cache would have nowhere to go; set vllm_pd_role = "
                           "'decode' on one")]
    return []


def _disagreements(pd: PdSet, host: str, spec: Spec, ref: Spec) -> list[FieldError]:
    out = []
    rules = [*_SAME, (block_size(spec)[0], lambda s: block_size(s)[1])]
    for key, read in rules:
        mine, theirs = read(spec), read(ref)
        if mine != theirs:
            out.append(FieldError(host, key, f"{mine!r}, but {pd.reference!r} (prefill) of P/D set {pd.name!r} has "
                                  f"{theirs!r}: both sides of a set must agree (the KV cache moves between them as is)"))
    return out


def _group_roles(specs: Mapping[str, Spec]) -> list[FieldError]:
    """A serving group is one replica: its members share the head's role and set."""
    out = []
    for host, spec in specs.items():
        head = spec.fleet.group_head
        if not spec.fleet.group or not head or head == host or head not in specs:
            continue
        for key, read in (("vllm_pd_role", lambda s: s.vllm.pd_role), ("vllm_pd_set", lambda s: s.vllm.pd_set)):
            if read(spec) != read(specs[head]):
                out.append(FieldError(host, key, f"{read(spec)!r}, but the head {head!r} of group {spec.fleet.group!r} "
                                      f"has {read(specs[head])!r}: members of a group serve one replica"))
    return out


# --------------------------------------------------------------------------- the gateway in front


@dataclass(frozen=True)
class PdRoutes:
    """What a gateway's router gets in P/D mode: the set and each side's worker URLs."""

    pd_set: str
    prefill: list[str]
    decode: list[str]


def _by_url(nodes: Iterable[Node]) -> dict[str, tuple[str, Spec]]:
    return {node_url(spec, address): (name, spec) for name, spec, address in nodes if spec.fleet.role == "node"}


def gateway_routes(gateway: Spec, nodes: Iterable[Node]) -> PdRoutes | None:
    """The P/D lists of a gateway whose workers are a P/D set's replicas; None for plain nodes.
    (Validated by pd_gateway_problems: a gateway fronts one whole set or none.)"""
    nodes = list(nodes)
    by_url = _by_url(nodes)
    sides: dict[str, list[str]] = {"prefill": [], "decode": []}
    name = None
    for url in gateway_workers(gateway, nodes):
        found = by_url.get(url)
        if found and found[1].vllm.pd_set:
            name = found[1].vllm.pd_set
            sides[found[1].vllm.pd_role].append(url)
    return PdRoutes(name, sides["prefill"], sides["decode"]) if name else None


def pd_gateway_problems(hosts: list[tuple[str, Spec, str]]) -> Iterator[tuple[str, str, str]]:
    """(host, key, reason) for a gateway that mixes sets, mixes a set with plain nodes, or leaves a side out."""
    nodes = [h for h in hosts if h[1].fleet.role == "node"]
    by_url = _by_url(nodes)
    sets = pd_sets({name: spec for name, spec, _ in nodes})
    for gw, spec, _ in hosts:
        if spec.fleet.role != "gateway":
            continue
        key = "gateway_workers" if spec.gateway.workers is not None else "model_repo_id"
        found = [by_url[u] for u in gateway_workers(spec, nodes) if u in by_url]
        names = sorted({s.vllm.pd_set for _, s in found if s.vllm.pd_set})
        plain = [n for n, s in found if not s.vllm.pd_set]
        if len(names) > 1:
            yield gw, key, f"routes to P/D sets {', '.join(map(repr, names))}: one router serves one set (a gateway each)"
        elif names and plain:
            yield gw, key, (f"routes to P/D set {names[0]!r} and to plain nodes ({', '.join(plain)}): vllm-router's P/D "
                            "mode sends every request to a prefill node, then a decode node; put plain nodes behind "
                            "another gateway")
        elif names:
            routed = {n for n, _ in found}
            pd = sets[names[0]]
            for side in ("prefill", "decode"):
                if not routed & set(getattr(pd, side)):
                    yield gw, key, (f"routes to P/D set {names[0]!r} without any of its {side} replicas "
                                    f"({', '.join(getattr(pd, side)) or 'none'}): the router needs both sides")
