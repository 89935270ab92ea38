"""Rollout decisions, pure: which nodes restart together, in which order, what to drain, when to stop.

A converge that changes what a node serves is a rolling update. Nodes serving one model are cut
into batches of at most `rollout_max_unavailable`; models roll side by side (batch i of every
model runs together). The first batch is the canary: the others move only after it passed
health, warm-up, smoke and the SLO. A failed batch is rolled back and the rollout stops there.
The roles do the SSH and HTTP; everything they decide with lives here.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from r1deploy.spec import Spec

# Floor and slope of the startup allowance when the operator sets none: engine init plus
# weight loading from local disk (~0.5 GiB/s with the page cache cold, generous on purpose).
_STARTUP_FLOOR_S = 600
_STARTUP_S_PER_GIB = 2.0
# A drain with no edge to size it from waits as long as the edge's default read timeout
# (gateway_read_timeout_s): what a client behind nginx may wait for a whole answer.
DEFAULT_DRAIN_S = 1800
_WILDCARD = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class Batch:
    index: int  # 0 is the canary
    nodes: tuple[str, ...]
    # The serving replicas in it: a single node, or a serving group whole (head first).
    units: tuple[tuple[str, ...], ...] = ()

    @property
    def canary(self) -> bool:
        return self.index == 0


@dataclass(frozen=True)
class RolloutPlan:
    batches: tuple[Batch, ...]
    notes: tuple[str, ...] = ()

    def batch_of(self, node: str) -> int | None:
        return next((b.index for b in self.batches if node in b.nodes), None)

    def describe(self) -> str:
        lines = [f"batch {b.index + 1}{' (canary)' if b.canary else ''}: {', '.join(b.nodes)}"
                 for b in self.batches]
        return "\n".join(lines + list(self.notes))


def node_url(spec: Spec, address: str) -> str:
    """How gateways reach a node's vLLM (the router's worker URL)."""
    return url_of(address, spec.vllm.port)


def url_of(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


@dataclass(frozen=True)
class Served:
    """Where the running engine serves now, when the spec moved it (a changed vllm_port or
    vllm_host_ip): the routers still list `url`, and checks on the node reach it at `engine`."""

    url: str
    engine: str


def served_now(spec: Spec, address: str, new_bind: str, live_bind: str | None, live_port: int | None) -> Served | None:
    """The live release's address (its vllm.yaml `host`/`port`) when it differs from what the spec
    renders now, else None. `new_bind`: the bind the spec renders (r1deploy.serving.render.engine_bind);
    a live bind that equals it, or listens everywhere, is reached at the node's fleet address."""
    if not live_port:
        return None
    bind = (live_bind or "").strip()
    host = address if bind in _WILDCARD or bind == new_bind else bind
    url = url_of(host, live_port)
    if url == node_url(spec, address):
        return None
    local = "127.0.0.1" if bind in _WILDCARD else bind
    return Served(url, url_of(local, live_port))


def drain_timeout_s(spec: Spec, gateways: Iterable[Spec]) -> int:
    """How long a drain waits for in-flight requests: the operator's rollout_drain_timeout_s, else
    as long as the edge lets a client wait for an answer (the longest gateway_read_timeout_s of
    the gateways that route to the node): a shorter drain would cut answers the edge still allows."""
    if spec.rollout.drain_timeout_s is not None:
        return spec.rollout.drain_timeout_s
    return max((g.gateway.read_timeout_s for g in gateways), default=DEFAULT_DRAIN_S)


def previous_in_history(history: Iterable[str], target: str, away_from: str | None) -> str | None:
    """After a rollback to `target`, what `previous` points at: the release activated before
    `target`'s last activation in the node's history, never the one rolled away from (a second
    rollback goes further back instead of returning to it). None: no such release is known."""
    lines = [h.strip() for h in history if h.strip()]
    if target not in lines:
        return None
    last = len(lines) - 1 - lines[::-1].index(target)
    return next((r for r in reversed(lines[:last]) if r not in (target, away_from)), None)


def replica_units(nodes: Iterable[tuple[str, Spec]]) -> dict[str, list[tuple[str, ...]]]:
    """Per model, its serving replicas in inventory order: a single node, or a serving group whole
    (head first, see r1deploy.fleet.groups.rollout_units). A group is one replica however many nodes."""
    from r1deploy.fleet.groups import rollout_units

    specs = {name: spec for name, spec in nodes if spec.fleet.role == "node"}
    by_model: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for unit in rollout_units(list(specs), specs):
        by_model[specs[unit[0]].model.name].append(tuple(unit))
    return by_model


def replicas(model: str, nodes: Iterable[tuple[str, Spec]]) -> int:
    """How many replicas serve `model` (judged on the whole inventory: the outage check)."""
    return len(replica_units(nodes).get(model, []))


def _unit_name(unit: tuple[str, ...], spec: Spec) -> str:
    return f"one serving group ({spec.fleet.group}: {', '.join(unit)})" if spec.fleet.group else f"one node ({unit[0]})"


def plan_batches(nodes: Iterable[tuple[str, Spec]], size_of=None) -> RolloutPlan:
    """Cut the nodes (in inventory order) into batches per model; batch i of every model together.

    Batches count replicas, not nodes: a serving group restarts whole, in one batch, and counts as
    one unavailable replica. A model served by one replica (a node or a group) is an outage
    whatever the batch size: the plan says so (the role refuses to restart a serving replica like
    that unless rollout_allow_outage is set). `size_of(spec)`: the batch size where it is not
    rollout_max_unavailable (a driver reboot's is gpu_reboot_batch_size).
    """
    specs = dict(nodes)
    batches: dict[int, list[tuple[str, ...]]] = defaultdict(list)
    notes = []
    for model, units in replica_units(specs.items()).items():
        first_spec = specs[units[0][0]]
        size = size_of(first_spec) if size_of else first_spec.rollout.max_unavailable
        if len(units) == 1:
            notes.append(f"{model}: {_unit_name(units[0], first_spec)} serves it; a restart is an outage "
                         "(needs rollout_allow_outage = True)")
        elif size >= len(units):
            size = len(units) - 1  # never the whole model at once: someone keeps serving
            notes.append(f"{model}: rollout_max_unavailable capped at {size} so one replica keeps serving")
        # With a canary, the first batch is one replica whatever the batch size.
        first = 1 if first_spec.rollout.canary else size
        chunks = [units[:first]] + [units[i:i + size] for i in range(first, len(units), size)]
        for index, chunk in enumerate(c for c in chunks if c):
            batches[index].extend(chunk)
    ordered = tuple(Batch(i, tuple(h for unit in batches[i] for h in unit), tuple(batches[i]))
                    for i in sorted(batches))
    return RolloutPlan(ordered, tuple(notes))


def startup_timeout_s(spec: Spec) -> int:
    """How long a start may take before it counts as failed: the operator's figure, else sized
    from the weights the catalog says this model loads (30 min for 671B, ~10 min for a distill)."""
    if spec.vllm.startup_timeout_s:
        return spec.vllm.startup_timeout_s
    from r1deploy.planner.catalog import find_model

    entry = find_model(spec.model.repo_id)
    gib = (entry.weight_bytes / 2**30) if entry and getattr(entry, "weight_bytes", None) else 0.0
    return int(max(_STARTUP_FLOOR_S, _STARTUP_FLOOR_S + gib * _STARTUP_S_PER_GIB))


_METRIC = re.compile(r"^(vllm:num_requests_(?:running|waiting))(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.M)


def in_flight(metrics_text: str) -> int | None:
    """Running + waiting requests from vLLM's /metrics (summed over engines); None if absent."""
    found = _METRIC.findall(metrics_text)
    if not found:
        return None
    return int(sum(float(value) for _, value in found))


@dataclass(frozen=True)
class UnitState:
    """What systemd says of the engine unit since our start."""

    active: str  # ActiveState
    sub: str  # SubState
    restarts: int  # NRestarts

    @classmethod
    def parse(cls, show_output: str) -> UnitState:
        values = dict(line.split("=", 1) for line in show_output.splitlines() if "=" in line)
        try:
            restarts = int(values.get("NRestarts", "0") or 0)
        except ValueError:
            restarts = 0
        return cls(values.get("ActiveState", "unknown"), values.get("SubState", "unknown"), restarts)

    def crash_looping(self, limit: int) -> bool:
        return self.active == "failed" or self.restarts >= limit or (
            self.restarts > 0 and self.sub == "auto-restart")


_ERROR_LINE = re.compile(r"(error|exception|invalid|unrecognized|traceback|fatal)", re.I)
# systemd's own lines about the unit (exit codes, restarts): not what vLLM said.
_SYSTEMD_LINE = re.compile(r"^([\w@.-]+\.service: |Failed to start |Started |Stopped |Starting |Stopping )")
# Strongest first: argparse's verdict ("api_server.py: error: ..."), a Python exception, a line
# logged at ERROR. vLLM's usage text (hundreds of "[--flag ...]" lines, some named "...-error-...")
# is never the complaint.
_STRONG = [re.compile(r"^\S+: error: "), re.compile(r"^[\w.]*(Error|Exception): "), re.compile(r"\bERROR\b")]
_USAGE_LINE = re.compile(r"^(usage: |\[|\S+\.py \[)")


def engine_error_line(journal: str) -> str | None:
    """vLLM's own complaint from a journal tail: the last line of the strongest kind there is."""
    lines = [ln.strip() for ln in journal.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not _SYSTEMD_LINE.match(ln) and not _USAGE_LINE.match(ln)]
    for pattern in _STRONG:
        found = [ln for ln in lines if pattern.search(ln)]
        if found:
            return found[-1]
    for line in reversed(lines):
        if _ERROR_LINE.search(line) and not line.startswith(("Traceback", "File ")):
            return line
    return None


def slo_problems(spec: Spec, ttft_ms: float | None, tokens_per_s: float | None) -> list[str]:
    """The canary's SLO on its smoke request: empty when it holds."""
    r = spec.rollout
    problems = []
    if r.canary_max_ttft_ms is not None:
        if ttft_ms is None:
            problems.append("no time to first token measured")
        elif ttft_ms > r.canary_max_ttft_ms:
            problems.append(f"TTFT {ttft_ms:.0f} ms > rollout_canary_max_ttft_ms {r.canary_max_ttft_ms:.0f}")
    if r.canary_min_tokens_per_s is not None:
        if tokens_per_s is None:
            problems.append("no decode rate measured")
        elif tokens_per_s < r.canary_min_tokens_per_s:
            problems.append(f"decode {tokens_per_s:.1f} tok/s < rollout_canary_min_tokens_per_s "
                            f"{r.canary_min_tokens_per_s:.1f}")
    return problems


@dataclass(frozen=True)
class NodeState:
    """What the converge found on a node before changing anything."""

    live_release: str | None  # what the running engine started from (None: not running)
    current_release: str | None  # where the release pointer points
    unit_matches: bool  # the installed unit equals the release's unit
    active: bool
    in_rotation: bool | None  # on every gateway that should route to it (None: no gateway yet)


def needs_restart(state: NodeState, release: str) -> bool:
    return not (state.active and state.live_release == release and state.current_release == release
                and state.unit_matches)


def needs_rejoin(state: NodeState) -> bool:
    return state.in_rotation is False


@dataclass
class Phase:
    name: str
    seconds: float
    detail: str = ""


@dataclass
class NodeRollout:
    """The timeline of one node's rollout, as the report shows it."""

    node: str
    batch: int
    release: str
    previous: str | None
    phases: list[Phase] = field(default_factory=list)
    outcome: str = "pending"  # rolled out | rejoined | rolled back | failed | held
    reason: str = ""
    group: str | None = None  # the serving group it rolled with, whole
    member: str = ""  # its part there: head, worker rank N

    def add(self, name: str, seconds: float, detail: str = "") -> None:
        self.phases.append(Phase(name, round(seconds, 2), detail))

    def as_dict(self) -> dict:
        group = {"group": self.group, "member": self.member} if self.group else {}
        return {"node": self.node, **group, "batch": self.batch + 1, "release": self.release,
                "previous": self.previous, "outcome": self.outcome, "reason": self.reason,
                "phases": [{"phase": p.name, "seconds": p.seconds, "detail": p.detail} for p in self.phases]}


class Rollout:
    """Shared state of one converge's rolling update (one per controller process)."""

    def __init__(self) -> None:
        self.stopped_by: str | None = None
        self.reason = ""
        self.nodes: dict[str, NodeRollout] = {}
        self.out_of_rotation: set[str] = set()  # worker URLs of nodes this rollout left failed

    def stop(self, node: str, reason: str) -> None:
        if self.stopped_by is None:
            self.stopped_by, self.reason = node, reason

    def held_message(self) -> str:
        return f"not rolled out: the rollout stopped after {self.stopped_by} failed ({self.reason})"


def fleet_address(name: str, data: Mapping[str, Any]) -> str:
    """A node's fleet address (the host of its node_url): its serving IP, else its SSH address, else its name."""
    return data.get("vllm_host_ip") or data.get("ssh_hostname") or name


def _host_key(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text.lower()


def worker_node(url: str, nodes: Iterable[tuple[str, Spec, str]]) -> tuple[str, Spec, str] | None:
    """The node a `gateway_workers` entry names, where that is unambiguous: plain http, no path (a
    trailing slash is none), the node's vllm_port, and as host its fleet address or its inventory
    name. None otherwise (`r1deploy check` says why)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "http" or parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    host = _host_key(parts.hostname or "")
    found = [(name, spec, address) for name, spec, address in nodes if spec.fleet.role == "node"
             and spec.vllm.port == port and host in {_host_key(address), name.lower()}]
    return found[0] if len(found) == 1 else None


def reconcile_wanted(listed: Iterable[str] | None, workers: Iterable[str], router_restarted: bool,
                     left_out: Iterable[str]) -> bool:
    """Whether the gateway stage reconciles its router's rotation: after ANY restart of the router
    (it starts with its whole start list, nodes this rollout left out included), when this run's
    rollout left a node out, or when the router listed other nodes than configured before the run."""
    return router_restarted or bool(set(left_out)) or (listed is not None and set(listed) != set(workers))


def gateway_workers(gateway: Spec, nodes: Iterable[tuple[str, Spec, str]]) -> list[str]:
    """The worker URLs a gateway routes to: its explicit list, else every node of its model.

    `nodes` are (name, spec, address) of the inventory's hosts. An explicit entry that names a
    node is that node's node_url, the URL the drain and rejoin compare with (written with a
    trailing slash or the inventory name it would never match, and the node was stopped in
    rotation)."""
    from r1deploy.fleet.groups import is_group_worker

    nodes = list(nodes)
    if gateway.gateway.workers is not None:
        return [node_url(found[1], found[2]) if (found := worker_node(url, nodes)) else url
                for url in gateway.gateway.workers]
    return [node_url(spec, address) for name, spec, address in nodes  # group workers are headless
            if spec.fleet.role == "node" and spec.model.name == gateway.model.name
            and not is_group_worker(spec, name)]


def gateways_of(node_url_: str, gateways: Iterable[tuple[str, Spec]],
                nodes: Iterable[tuple[str, Spec, str]]) -> list[str]:
    """Names of the gateways that route to this node: the ones to drain it from."""
    nodes = list(nodes)
    return [name for name, spec in gateways if node_url_ in gateway_workers(spec, nodes)]


def another_serves(url: str, listed: Iterable[str], healthy: dict[str, bool], gateway: str,
                   model: str) -> str | None:
    """Issue 21 item 6: the live check before a drain. Why draining `url` from a gateway whose router
    lists `listed` would leave `model` with nobody in rotation there (None: another listed worker
    answers /health, or `url` is not in rotation there, so its drain takes nothing away). Counts
    what the router routes to now, not the inventory: a second controller's drain shows here."""
    listed = set(listed)
    if url not in listed:
        return None
    others = sorted(listed - {url})
    if any(healthy.get(other) for other in others):
        return None
    why = (f"the others listed there ({', '.join(others)}) do not answer /health" if others
           else "it is the only worker in rotation there")
    return (f"draining {url} from {gateway} would leave {model} with no serving replica: {why}; "
            "set rollout_allow_outage = True to accept the outage")
