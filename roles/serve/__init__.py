"""Serve: render the release (engine YAML + env + unit) and roll it out, batch by batch.

A release is a directory named by the digest of everything rendered; `current` points at the
live one, `previous` at the one before. The files land first (nothing restarts). Then one
operation per batch (r1deploy.fleet.rollout.plan_batches): each node of the batch is drained from its
gateways, stopped once idle, started on the new release, proven (health, warm-up, smoke — plus
the SLO on the canary) and put back in rotation; a failure rolls that node back and stops the
rollout (roles/serve/rollout.py). A serving group is one replica in one batch: its head drives
the turn of every member (roles/serve/group_turn.py). A node that is already on its release and
in rotation takes no turn: a converge that changes nothing restarts nothing.
"""

from __future__ import annotations

import hashlib
from io import StringIO

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import files, python
from r1deploy.roles._fleet import address, connected, fleet_view
from r1deploy.roles._group import host_group, render_host
from r1deploy.roles._plan import host_plan
from r1deploy.roles._rollout import track
from r1deploy.roles._secret import engine_key_files
from r1deploy.roles._spec import host_spec
from r1deploy.roles.serve.facts import EngineRelease, RouterWorkers
from r1deploy.roles.serve.release import CURRENT, PREVIOUS, UNIT_PATH
from r1deploy.roles.serve.rollout import ROLLOUT, roll_node

from r1deploy.fleet import rollout as core
from r1deploy.serving.edge import router_admin
from r1deploy.serving.render import CONFIG_DIR, SERVICE, compile_cache_dir, engine_bind

# What serve() decided per node, for the batch operations rollout() lays out on every host.
_TURNS: dict[str, dict] = {}


def _in_rotation(url: str, gateway_admins: list[tuple[str, str]]) -> bool | None:
    """Listed on every gateway that should route to it; None while no gateway router runs yet."""
    listed = []
    for name, admin in gateway_admins:
        workers = connected(name).get_fact(RouterWorkers, url=admin)
        if workers is not None:
            listed.append(url in workers)
    return all(listed) if listed else None


def _release_files(spec, node) -> list:
    """The new release's files, written beside the live one: nothing restarts here."""
    release_dir = f"{CONFIG_DIR}/releases/{node.release}"
    track(files.directory(name=f"Release {node.release}", path=release_dir, mode="755"))
    written = [track(files.put(name=f"Release {node.release}: {name}", src=StringIO(content),
                               dest=f"{release_dir}/{name}", mode="644")) for name, content in node.files.items()]
    # A new key restarts the engine (it reads secret.env at start), batch by batch like a release.
    written += engine_key_files(spec, engine=True)
    for sub in ("vllm", "inductor", "triton", "flashinfer"):  # warm restarts: caches survive
        files.directory(name=f"Compile cache {sub}", path=f"{compile_cache_dir(spec)}/{sub}",
                        user=spec.vllm.user, group=spec.vllm.user, mode="750")
    return written


@deploy("Serve")
def serve(to_previous: bool = False) -> None:
    """Roll out what the spec renders; `to_previous`: roll back to the release before the live one."""
    spec = host_spec()
    facts = host.get_fact(EngineRelease, current=CURRENT, previous=PREVIOUS, unit_path=UNIT_PATH, service=SERVICE)
    if to_previous:  # refused before anything is touched: a gone release would cost two cold starts
        if not facts["previous"]:
            raise DeployError(f"{host.name}: no previous release to roll back to (a rollback goes back "
                              "one release per run, never to the release it left)")
        if not facts["previous_complete"]:
            raise DeployError(f"{host.name}: the previous release {facts['previous']} is missing or incomplete "
                              f"in {CONFIG_DIR}/releases (pruned?): nothing was changed")
        release, unit_text, written = facts["previous"], None, []
    else:
        plan = host_plan(spec)  # real GPU facts where the driver answers, else the spec's hardware
        node = render_host(spec, plan)  # with the plan's env and, in a serving group, vLLM's multi-node flags
        release, unit_text = node.release, node.files[SERVICE]
        written = _release_files(spec, node)

    deploying, gateways, nodes = fleet_view()
    batches = core.plan_batches(deploying)
    url = core.node_url(spec, address(host))
    mine = [(name, s) for name, s in gateways if name in core.gateways_of(url, gateways, nodes)]
    gateway_admins = [(name, router_admin(s)) for name, s in mine]
    now = core.served_now(spec, address(host), engine_bind(spec, address(host)), facts.get("bind"), facts.get("port"))
    state = core.NodeState(
        live_release=facts["live"] if facts["active"] else None, current_release=facts["current"],
        unit_matches=unit_text is None or facts["unit_sha256"] == hashlib.sha256(unit_text.encode()).hexdigest(),
        active=facts["active"], in_rotation=_in_rotation(url, gateway_admins))
    restart = core.needs_restart(state, release)
    # An outage is judged on the whole inventory: under --limit the other nodes still serve.
    # A serving group is one replica, however many nodes.
    single = core.replicas(spec.model.name, [(name, s) for name, s, _ in nodes]) == 1
    _TURNS[host.name] = dict(
        spec=spec, release=release, url=url, gateway_admins=gateway_admins, state=state, written=written,
        restart=restart, single_node_model=single, batch=batches.batch_of(host.name), group=host_group(spec),
        now=now, drain_s=core.drain_timeout_s(spec, [s for _, s in mine]), rolling_back=to_previous)


@deploy("Rollout")
def rollout() -> None:
    """One operation per batch, on EVERY host (gateways skip them all): pyinfra orders each
    host's operations only against its own, so a gateway's later stages (router changes, smoke
    through it) run after the last batch only if the gateway's list holds the batch operations too.
    Call it from one line of the deploy file for all hosts."""
    deploying, _, _ = fleet_view()
    batches = core.plan_batches(deploying)
    turn = _TURNS.get(host.name)
    for batch in batches.batches:
        mine = bool(turn) and turn["batch"] == batch.index
        python.call(
            name=f"Rolling update, batch {batch.index + 1}/{len(batches.batches)}"
                 + (" (canary)" if batch.canary and len(batches.batches) > 1 else ""),
            function=_turn, batch=batch.index,
            canary=batch.canary and len(batches.batches) > 1,
            _if=lambda mine=mine, name=host.name: mine and _drives(name) and _wanted_unit(name))


def _restart_wanted(turn: dict) -> bool:
    return turn["restart"] or any(op.did_change() for op in turn["written"])


def _wanted(turn: dict) -> bool:
    from r1deploy.roles._rollout import DRAINED  # drained for a driver reboot earlier in this run

    return _restart_wanted(turn) or core.needs_rejoin(turn["state"]) or host.name in DRAINED


def _members(name: str) -> dict[str, dict]:
    """The turns of this host's replica in this run: itself, or every member of its serving group
    that this run deploys (known at execution: every host's serve() ran by then)."""
    group = _TURNS[name]["group"]
    return {h: _TURNS[h] for h in group.hosts if h in _TURNS} if group else {name: _TURNS[name]}


def _drives(name: str) -> bool:
    """Whether this host takes its replica's turn: a single node, or the first member of its group
    in this run (the head, unless --limit left it out: then that member refuses the turn)."""
    return next(iter(_members(name))) == name


def _wanted_unit(name: str) -> bool:
    return any(_wanted(t) for t in _members(name).values())


def _turn(batch: int, canary: bool) -> None:
    t = _TURNS[host.name]
    if t["group"]:
        _group_turn(t, batch, canary)
        return
    try:
        roll_node(t["spec"], t["release"], batch, canary and t["spec"].rollout.canary, _restart_wanted(t), t["url"],
                  t["gateway_admins"], t["single_node_model"], now=t.get("now"), drain_s=t.get("drain_s"),
                  rolling_back=t.get("rolling_back", False))
    except Exception as exc:  # whatever broke, the batches after this one must not move
        ROLLOUT.stop(host.name, f"{type(exc).__name__}: {exc}")
        raise


def _group_turn(t: dict, batch: int, canary: bool) -> None:
    from r1deploy.roles.serve.group_turn import roll_group

    members = _members(host.name)
    try:
        roll_group(t["group"], members, batch, canary and t["spec"].rollout.canary,
                   any(_restart_wanted(m) for m in members.values()), t["single_node_model"])
    except Exception as exc:  # whatever broke, the batches after this one must not move
        ROLLOUT.stop(f"{host.name} (group {t['group'].name})", f"{type(exc).__name__}: {exc}")
        raise
