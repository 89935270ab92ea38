"""A serving group's turn in a rolling update: the head and its workers restart as ONE replica.

Runs in the head's python.call of its batch (the batch holds the whole group, r1deploy.fleet.rollout
.plan_batches) and reaches the workers over their own SSH connections. The head is drained from
its gateways (workers are never in a router) and waited on until idle; then every member stops
(head first), activates its new release and starts (workers first: they wait at the head's
rendezvous, r1deploy.fleet.groups.start_order); the group is up when the head answers and every
member's unit runs; warm-up and smoke go through the head, which then rejoins. A failure rolls
every member back to its previous release, restarts the group, and stops the rollout, naming the
member, the phase and vLLM's own error line.
"""

from __future__ import annotations

import time

from pyinfra import host
from pyinfra.api import OperationError
from r1deploy.roles._fleet import connected
from r1deploy.roles._rollout import remote
from r1deploy.roles.serve.release import activate, complete, keep_previous, pointers
from r1deploy.roles.serve.rollout import (
    ROLLOUT,
    PhaseFailed,
    _engine,
    _Timer,
    _unit_state,
    _write_report,
    back_in_rotation,
    drain_from,
    ensure_another_serves,
    failure_story,
    journal_since,
    listed_workers,
    rejoin,
    serves,
    smoke,
    wait_drained,
    warm_up,
)

from r1deploy.fleet import groups as grp
from r1deploy.fleet import rollout as core
from r1deploy.serving.group import ServingGroup
from r1deploy.serving.render import CONFIG_DIR, SERVICE
from r1deploy.spec import Spec


class MemberFailed(PhaseFailed):
    """A phase failed on one member of the group."""

    def __init__(self, phase: str, member: str, reason: str, journal: str = ""):
        super().__init__(phase, reason, journal)
        self.member = member


def _target(group: ServingGroup, name: str):
    """How remote() reaches a member: the head is this host (None), a worker its own connection."""
    return None if name == group.head else connected(name)


def _on(group: ServingGroup, name: str, phase: str, action):
    """Run one member's step; an SSH or command failure names that member."""
    try:
        return action(_target(group, name))
    except OperationError as exc:
        raise MemberFailed(phase, name, str(exc)) from exc


def _stop_all(group: ServingGroup, phase: str) -> None:
    for name in grp.stop_order(group):
        _on(group, name, phase, lambda t: remote(
            f"if systemctl is-active --quiet {SERVICE}; then systemctl stop {SERVICE}; fi", "stop", target=t))


def _start_all(group: ServingGroup, releases: dict[str, str], phase: str) -> dict[str, float]:
    """Activate each member's release and start it, workers first; returns when each started.
    A rollback's start is no step forward: the members' histories do not record it."""
    return {name: _on(group, name, phase, lambda t, name=name: activate(
        f"{CONFIG_DIR}/releases/{releases[name]}", target=t, remember=phase != "rollback"))
        for name in grp.start_order(group)}


def _blame(group: ServingGroup, started: dict[str, float]) -> tuple[str, str]:
    """(member, journal) of a group that did not come up in time: the first member whose journal
    holds an error line (a worker's NCCL/Gloo failure hangs the head), else the head."""
    journals = {name: _on(group, name, "healthy", lambda t, name=name: journal_since(started[name], target=t))
                for name in group.hosts}
    return next(((n, j) for n, j in journals.items() if core.engine_error_line(j)),
                (group.head, journals[group.head]))


def wait_group_healthy(spec: Spec, group: ServingGroup, started: dict[str, float]) -> str:
    """The head answers /health and /v1/models and every member's unit runs; a member whose unit
    crash-loops, fails or exits fails the group in seconds."""
    limit, timeout = spec.rollout.crashloop_restarts, core.startup_timeout_s(spec)
    baseline = {n: _on(group, n, "healthy", lambda t: _unit_state(t)).restarts for n in group.hosts}
    deadline, last_log = time.monotonic() + timeout, time.monotonic()
    while True:
        answers = _on(group, group.head, "healthy", lambda _: serves(spec))
        units = {}
        for name in group.hosts:
            state = _on(group, name, "healthy", lambda t: _unit_state(t))
            since = core.UnitState(state.active, state.sub, state.restarts - baseline[name])
            units[name] = (state.active, since.crash_looping(limit))
        verdict = grp.group_start(group, answers, units)
        if verdict.status == "up":
            return f"{group.head} serves {spec.model.name}; {group.size} member units run"
        if verdict.status == "failed":
            journal = _on(group, verdict.member, "healthy",
                          lambda t, member=verdict.member: journal_since(started[member], target=t))
            raise MemberFailed("healthy", verdict.member, verdict.reason, journal)
        if time.monotonic() > deadline:
            member, journal = _blame(group, started)
            raise MemberFailed("healthy", member, f"group {group.name} not serving after {timeout}s "
                               f"({verdict.reason})", journal)
        if time.monotonic() - last_log > 30:
            host.log(f"waiting for group {group.name}: {verdict.reason}")
            last_log = time.monotonic()
        time.sleep(2)


def _prove(spec: Spec, group: ServingGroup, records: list, started: dict[str, float], canary: bool) -> None:
    with _Timer(records, "healthy") as t:
        t.detail = wait_group_healthy(spec, group, started)
    if spec.rollout.warmup:  # through the head (this host): it spreads the work over every rank
        with _Timer(records, "warm-up") as t:
            t.detail = warm_up(spec)
    with _Timer(records, "smoke") as t:
        t.detail = smoke(spec, canary)


def _drain(spec: Spec, group: ServingGroup, gateways: list, url: str, members: dict[str, str],
           head: dict) -> str:
    """Out of rotation: the head's URL (and the one it serves at now, when the spec moved it), and
    a member's own URL where a router still lists it (a node that served alone and now joins the
    group as a worker); then until each of those is idle."""
    listed = set().union(*(listed_workers(gw, admin) for gw, admin in gateways))
    alone = {n: u for n, u in members.items() if n != group.head and u in listed}
    now, drain_s, grace = head.get("now"), head.get("drain_s"), spec.rollout.shutdown_timeout_s
    notes = drain_from(gateways, url, tuple(alone.values()) + ((now.url,) if now else ()))
    waits = [wait_drained(now.engine if now else _engine(spec), drain_s, shutdown_s=grace)]
    waits += [f"{n}: " + wait_drained(u, drain_s, _target(group, n), grace) for n, u in alone.items()]
    return "; ".join(notes + waits)


def _restart(spec: Spec, group: ServingGroup, records: list, releases: dict[str, str], gateways: list,
             urls: tuple[str, dict[str, str]], canary: bool, head: dict) -> None:
    """urls: the head's, and every member's own as a router may list it. `head`: the head's turn."""
    url, members = urls
    if gateways:
        ensure_another_serves(spec, gateways, url)
        with _Timer(records, "drain") as t:
            t.detail = _drain(spec, group, gateways, url, members, head)
    with _Timer(records, "stop") as t:
        _stop_all(group, "stop")
        t.detail = "stopped " + ", then ".join(grp.stop_order(group))
    with _Timer(records, "start") as t:
        started = _start_all(group, releases, "start")
        t.detail = "started " + ", then ".join(grp.start_order(group))
    _prove(spec, group, records, started, canary)


def _roll_back(spec: Spec, group: ServingGroup, records: dict, gateways: list, url: str,
               prior_previous: dict[str, str | None]) -> str:
    """Every member back to its previous release, the group restarted whole and proven, the head
    rejoined. `previous` keeps pointing where it did before (the bad release is never a target)."""
    lacking = [n for n, r in records.items()  # none, or one that is gone (pruned): never a cold start into it
               if not r.previous or not _on(group, n, "rollback", lambda t, r=r: complete(r.previous, t))]
    if lacking:
        try:
            _stop_all(group, "rollback")
        except MemberFailed as exc:
            return f"no complete previous release on {', '.join(lacking)}, and stopping failed ({exc}); out of rotation"
        return f"no complete previous release on {', '.join(lacking)}: the group is stopped and out of rotation"
    try:
        _stop_all(group, "rollback")
        started = _start_all(group, {n: r.previous for n, r in records.items()}, "rollback")
        for name, record in records.items():
            _on(group, name, "rollback", lambda t, r=record, n=name: keep_previous(r.previous, prior_previous[n], t))
        _prove(spec, group, list(records.values()), started, canary=False)
        if gateways:
            rejoin(gateways, url, core.startup_timeout_s(spec))
        return "every member rolled back to its previous release; the group serves again and is back in rotation"
    except (PhaseFailed, OperationError) as again:
        return f"rolled back every member, but the group is NOT healthy either ({again}); out of rotation"


def _fail(spec: Spec, group: ServingGroup, records: dict, failure: PhaseFailed, gateways: list, url: str,
          prior_previous: dict[str, str | None]) -> None:
    member = getattr(failure, "member", group.head)
    role = group.member(member).role
    ROLLOUT.stop(f"{member} (group {group.name})", f"{failure.phase}: {failure.reason}")
    stopped = False
    if failure.phase == "plan":  # nothing was touched
        back = "nothing was changed"
    elif failure.phase == "drain" or (failure.phase == "rollout" and not records[group.head].phases):
        back = back_in_rotation(gateways, url, "the head")  # never stopped: it serves as before
    else:
        back, stopped = _roll_back(spec, group, records, gateways, url, prior_previous), True
    outcome = "rolled back" if back.startswith("every member rolled back") else "failed"
    if outcome == "failed" and stopped:  # (the gateway stage keeps it out; one never stopped stays in)
        ROLLOUT.out_of_rotation.add(url)
    for record in records.values():
        record.outcome, record.reason = outcome, f"{failure.phase} on {member} ({role}): {failure.reason}"
    release = records[group.head].release
    raise OperationError(
        f"release {release} failed in serving group {group.name} on {member} ({role}) at {failure.phase}: "
        f"{failure.reason}" + failure_story(failure, back, f" of {member}"))


def roll_group(group: ServingGroup, turns: dict[str, dict], batch: int, canary: bool, restart: bool,
               single_replica: bool) -> None:
    """The group's turn, from its head: restart every member into its release (drained, proven,
    rejoined), or only prove and rejoin. `turns`: what serve() decided per member of this run."""
    head = turns[group.head] if group.head in turns else next(iter(turns.values()))
    spec, url = head["spec"], head["url"]
    records = {n: core.NodeRollout(n, batch, turns[n]["release"] if n in turns else "?", None, group=group.name,
                                   member=group.member(n).role) for n in group.hosts}
    if ROLLOUT.stopped_by:
        for record in records.values():
            record.outcome, record.reason = "held", ROLLOUT.held_message()
            _write_report(record)
        host.log(ROLLOUT.held_message())
        return
    gateways: list = []
    prior_previous: dict[str, str | None] = {}
    try:
        missing = grp.missing_members(group, turns)
        if missing:
            raise MemberFailed("plan", missing[0], f"{', '.join(missing)} not in this run: a serving group rolls "
                               f"whole; deploy all of {', '.join(group.hosts)} together (--limit)")
        for name, record in records.items():  # what a failure goes back to, per member
            live, before = _on(group, name, "plan", lambda t: pointers(t))
            record.previous, prior_previous[name] = (before if live == record.release else live) or None, before
        gateways = [(connected(name), admin) for name, admin in head["gateway_admins"]]
        if restart and single_replica and not spec.rollout.allow_outage and _unit_state().active == "active":
            raise MemberFailed("plan", group.head, f"only group {group.name} ({', '.join(group.hosts)}) serves "
                               f"{spec.model.name}: this restart is an outage; set rollout_allow_outage = True "
                               "to accept it")
        if restart:
            members = {n: turns[n]["url"] for n in group.hosts if n in turns}
            _restart(spec, group, list(records.values()), {n: r.release for n, r in records.items()}, gateways,
                     (url, members), canary, head)
        else:
            _prove(spec, group, list(records.values()), {n: time.time() for n in group.hosts}, canary=False)
        if gateways:
            with _Timer(list(records.values()), "rejoin") as t:
                notes = rejoin(gateways, url, core.startup_timeout_s(spec))
                t.detail = "; ".join(notes) or f"head in rotation on {', '.join(g.name for g, _ in gateways)}"
        for record in records.values():
            record.outcome = "rolled out" if restart else "rejoined"
    except (PhaseFailed, OperationError) as exc:
        failure = exc if isinstance(exc, PhaseFailed) else PhaseFailed("rollout", str(exc))
        _fail(spec, group, records, failure, gateways, url, prior_previous)
    finally:
        for record in records.values():
            _write_report(record)
    host.log(f"rollout of group {group.name}: {records[group.head].outcome} "
             + "  ".join(f"{p.name} {p.seconds:.1f}s" for p in records[group.head].phases))
