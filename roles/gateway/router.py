"""The gateway's router, blue/green behind nginx (issue 23 item 1; decisions in r1deploy.fleet.bluegreen).

A change of the router's unit never restarts the router nginx routes to: the standby colour is
started beside it on its own loopback port, brought to the live one's rotation, proven (/health,
a chat completion through it with the nodes' key), and nginx's upstream include is moved to it
(`nginx -t`, then a graceful reload: old workers finish their requests on the old router). The
old colour is stopped once no connection to it is left (or after gateway_router_drain_timeout_s).
The whole switch is one change window: the 5xx nginx logged in it are counted and fail the converge.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import OperationError
from pyinfra.operations import files, python, systemd
from r1deploy.roles._rollout import remote, track
from r1deploy.roles.gateway.facts import RouterColours
from r1deploy.roles.gateway.window import close_window, judge, open_window

from r1deploy.drift.checks import router_workers
from r1deploy.fleet.bluegreen import (
    Colour,
    SwitchPlan,
    colours,
    live_colour,
    plan_switch,
    reinstalled,
    render_upstream,
)
from r1deploy.serving import edge
from r1deploy.serving.render import render_router_unit


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def live_on_host(spec) -> Colour:
    """The colour nginx routes to on this gateway (its upstream include, read now): for drift."""
    seen = host.get_fact(RouterColours, upstream=edge.ROUTER_UPSTREAM, units=[c.service for c in colours(spec)])
    return live_colour(spec, seen["upstream"])


def router_plan(spec, routes=None) -> tuple[SwitchPlan, dict[str, str], dict]:
    """What the host has against what the spec renders: the plan and each colour's unit
    (`routes`: the P/D set the gateway fronts, r1deploy.fleet.pd_sets.gateway_routes)."""
    blue, green = colours(spec)
    desired = {c.name: render_router_unit(spec, host.name, c.name, routes) for c in (blue, green)}
    seen = host.get_fact(RouterColours, upstream=edge.ROUTER_UPSTREAM, units=[blue.service, green.service])
    plan = plan_switch(spec, seen["upstream"], seen["units"], seen["active"],
                       {name: _sha(unit) for name, unit in desired.items()})
    if seen["upstream"] is None:  # a first install, or a single router from before blue/green: it is blue
        files.put(name="nginx: the router's upstream (live colour)", dest=edge.ROUTER_UPSTREAM, mode="644",
                  src=StringIO(render_upstream(plan.live)))
    return plan, desired, seen


def restart_in_place(plan: SwitchPlan, unit: str, installed, also=lambda: False):
    """Nothing is served through the live colour (first install, a router that never came up), or
    a P/D router (`also`: its start list changed; P/D lists are not switched blue/green yet): its
    unit and a (re)start, as a single router always had. Returns the restart operation."""
    c = plan.live
    op = track(files.put(name=f"Unit {c.service}", dest=f"/etc/systemd/system/{c.service}", src=StringIO(unit),
                         mode="644"))
    systemd.daemon_reload(name="systemd daemon-reload", _if=op.did_change)
    track(systemd.service(name=f"Enable {c.service} ({c.name})", service=c.service, running=True, enabled=True))
    return systemd.service(name=f"Restart {c.service} on change", service=c.service, restarted=True,
                           _if=lambda: op.did_change() or installed.did_change() or also())


def router_stage(spec, installed, planned: tuple[SwitchPlan, dict[str, str], dict]):
    """The router's unit(s) as the spec says (`planned`: router_plan's, made before the edge's
    files); returns a callable: did this run restart or switch it."""
    plan, desired, seen = planned
    if plan.reason and not plan.switches:
        restarted = restart_in_place(plan, desired[plan.live.name], installed)
        return restarted.did_change
    idle = [c for c in colours(spec) if c != plan.live]
    if not plan.reason and seen["active"].get(idle[0].service):  # a switch that died before its stop
        systemd.service(name=f"Stop {idle[0].service} (not live)", service=idle[0].service, running=False,
                        enabled=False)
    wanted = lambda: plan.switches or installed.did_change()  # noqa: E731 (asked when executing)
    final = plan if plan.switches else reinstalled(plan, spec)
    unit = track(files.put(name=f"Unit {final.target.service} (standby, {final.target.name})",
                           dest=f"/etc/systemd/system/{final.target.service}", src=StringIO(desired[final.target.name]),
                           mode="644", _if=wanted))
    switched = python.call(name=f"Router blue/green: {final.live.name} -> {final.target.name}", function=switch,
                           live=final.live, target=final.target, reason=final.reason, model=spec.model.name,
                           startup_s=spec.gateway.worker_startup_timeout_s, drain_s=spec.gateway.router_drain_timeout_s,
                           timeout_s=spec.smoke.timeout_s, _if=wanted)
    return lambda: unit.did_change() or switched.did_change()


def switch(live: Colour, target: Colour, reason: str, model: str, startup_s: int, drain_s: int, timeout_s: int) -> None:
    window = open_window()
    remote(f"systemctl daemon-reload && systemctl restart {target.service}", f"start {target.service}")
    try:
        _wait_health(target, startup_s)
        _same_rotation(live, target)
        _prove(target, model, timeout_s)
        _point_nginx(target)
    except OperationError:
        remote(f"systemctl stop {target.service}", f"stop {target.service}")  # the live one never stopped
        raise
    drained, cut = _drain(live, drain_s)
    remote(f"systemctl disable --now {live.service} && systemctl enable {target.service}", "stop the old colour")
    report = close_window(window, [f"router {live.name} -> {target.name} ({reason})", drained])
    report.cut = cut  # streams cut mid-way log their 200: counted here, not among the 5xx
    judge(report)


def _wait_health(c: Colour, timeout_s: int) -> None:
    """It answers /health once its start list's workers do (it waits for them at start)."""
    remote(f"for i in $(seq {timeout_s}); do curl -fsS -m 2 {c.admin}/health >/dev/null && exit 0; sleep 1; done; "
           f"journalctl -u {c.service} -n 20 --no-pager -o cat; exit 1", f"{c.service} /health")


def _workers(c: Colour) -> set[str]:
    urls = router_workers(json.loads(remote(f"curl -fsS -m 10 {c.admin}/list_workers", f"{c.name} workers")))
    if urls is None:
        raise OperationError(f"{host.name}: {c.service}'s /list_workers answer is not one vllm-router gives")
    return set(urls)


def _same_rotation(live: Colour, target: Colour) -> None:
    """The new router routes exactly where the live one does: it started with the whole start
    list, and nodes a rollout holds out (drained, failed) must stay out."""
    want, have = _workers(live), _workers(target)
    for url in sorted(have - want):
        remote(f"curl -fsS -m 30 -X POST \"{target.admin}/remove_worker?url={url}\"", "remove worker")
    for url in sorted(want - have):
        remote(f"curl -fsS -m 60 -X POST \"{target.admin}/add_worker?url={url}\"", "add worker")
    if _workers(target) != want:
        raise OperationError(f"{host.name}: {target.service} does not take the live rotation {sorted(want)}")


def _prove(c: Colour, model: str, timeout_s: int) -> None:
    """One real chat completion through the new router, with the nodes' key nginx sends."""
    body = json.dumps({"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "Say hi"}]})
    out = remote(f"b=$(mktemp); c=$(curl -sS -m {timeout_s} -o \"$b\" -w '%{{http_code}}' {edge.curl_auth()} "
                 f"-H 'Content-Type: application/json' -d {shlex.quote(body)} {c.admin}/v1/chat/completions); "
                 f"echo \"$c\"; head -c 2000 \"$b\"; rm -f \"$b\"", f"chat through {c.service}")
    code, _, reply = out.partition("\n")
    if code.strip() != "200" or '"choices"' not in reply:
        raise OperationError(f"{host.name}: {c.service} ({c.name}) did not answer a chat completion: HTTP "
                             f"{code.strip()} {reply[:200]}; nginx still routes to the live router")


def _point_nginx(c: Colour) -> None:
    """The upstream include to `c`, `nginx -t`, a graceful reload, and the record of what nginx
    loaded (roles/gateway/edge.py); a refused config puts the previous include back."""
    up = edge.ROUTER_UPSTREAM
    remote(f"cp -p {up} {up}.prev && printf '%s' {shlex.quote(render_upstream(c))} > {up}.next && mv {up}.next {up} "
           f"&& if nginx -t -q; then systemctl reload nginx && {{ {edge.edge_digests_sh()}; }} > {edge.LOADED_MARK}.next "
           f"&& mv {edge.LOADED_MARK}.next {edge.LOADED_MARK}; else mv {up}.prev {up}; exit 1; fi",
           f"nginx: upstream to {c.name}")


def _drain(old: Colour, timeout_s: int) -> tuple[str, int]:
    """Wait until nothing is left on the old router: nginx's old workers (titled "worker process is
    shutting down") keep their requests, long streams too, and exit when they are done; no TCP
    connection to the old port is left (ss, where installed). Returns (what happened, requests cut:
    the connections still open when the bound ran out; the old router is stopped under them)."""
    pattern = "worker process is shutting dow[n]"  # (the bracket: grep's own argv does not match)
    out = remote(f"for i in $(seq 0 {timeout_s}); do w=$(grep -sl '{pattern}' /proc/[0-9]*/cmdline | wc -l); "
                 f"n=$(command -v ss >/dev/null && ss -Htn state established '( dport = :{old.port} )' | wc -l || echo 0); "
                 f"if [ \"$w\" = 0 ] && [ \"$n\" = 0 ]; then echo drained $i; exit 0; fi; sleep 1; done; "
                 f"echo left $w $n", "drain")
    said = (out.strip().splitlines() or [""])[-1].split() + ["", "", ""]
    if said[0] == "drained":
        return f"{old.name} drained in {said[1]}s", 0
    cut = int(said[2]) if said[2].isdigit() else 0
    return (f"{old.name} not drained after {timeout_s}s (gateway_router_drain_timeout_s): stopped under "
            f"{cut} open connection(s), {said[1]} nginx worker(s) still finishing"), cut
