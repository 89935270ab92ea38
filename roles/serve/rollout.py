"""One node's turn in a rolling update: drain, stop, start, prove, rejoin — or roll back.

Runs inside a python.call of its batch's operation, so it may talk to other hosts: the gateways
that route to this node are reached over their own SSH connections, on their loopback (the
router's admin routes never listen elsewhere). Every decision is in r1deploy.fleet.rollout.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

from pyinfra import host
from pyinfra.api import OperationError
from r1deploy.roles._fleet import address, connected
from r1deploy.roles._rollout import remote
from r1deploy.roles._secret import key_args
from r1deploy.roles.serve.release import activate, before_in_history, complete, keep_previous, pointers

from r1deploy.fleet import rollout as core
from r1deploy.serving.edge import curl_auth, engine_local_url
from r1deploy.serving.render import CONFIG_DIR, ROUTER_SERVICE, SERVICE, agent_venv
from r1deploy.spec import Spec

ROUTER_UNIT = f"/etc/systemd/system/{ROUTER_SERVICE}"
ROLLOUT = core.Rollout()  # one rolling update per controller process


class PhaseFailed(Exception):
    def __init__(self, phase: str, reason: str, journal: str = ""):
        super().__init__(f"{phase}: {reason}")
        self.phase, self.reason, self.journal = phase, reason, journal


def _reports_dir() -> Path:
    path = Path(os.environ.get("R1DEPLOY_REPORTS", "reports"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_report(record: core.NodeRollout) -> None:
    ROLLOUT.nodes[record.node] = record
    out = _reports_dir()
    (out / f"rollout-{record.node}.json").write_text(json.dumps(record.as_dict(), indent=2) + "\n")
    summary = {"stopped_by": ROLLOUT.stopped_by, "reason": ROLLOUT.reason,
               "nodes": [r.as_dict() for r in ROLLOUT.nodes.values()]}
    (out / "rollout.json").write_text(json.dumps(summary, indent=2) + "\n")


class _Timer:
    """Times a phase into the node's record (or every record of a group); a failure inside names the phase."""

    def __init__(self, record: core.NodeRollout | list[core.NodeRollout], phase: str):
        self.records = record if isinstance(record, list) else [record]
        self.phase = phase

    def __enter__(self):
        self.t0 = time.monotonic()
        return self

    def __exit__(self, kind, exc, tb):
        detail = getattr(self, "detail", "")
        for record in self.records:
            record.add(self.phase, time.monotonic() - self.t0, detail if kind is None else f"failed: {exc}")
        if kind is not None and issubclass(kind, OperationError):  # (RouterUnreachable too)
            raise PhaseFailed(self.phase, str(exc)) from exc
        return False


# --- gateways -----------------------------------------------------------------------------

class RouterUnreachable(OperationError):
    """A gateway whose router is installed does not answer its admin API: whether it still routes
    to the node is unknown, so nothing may be stopped."""


def _router(gateway, path: str, admin: str, method: str = "GET", timeout: int = 30) -> tuple[str, str]:
    """(HTTP status, body) from a gateway's router admin API, on its loopback (r1deploy.serving.edge.router_admin)
    over SSH; status "none": no router is installed there yet (a first deploy: the gateway stage,
    which installs it, runs after the rollout; nothing routes through it). A router that is
    installed but does not answer raises RouterUnreachable, naming the gateway and curl's reason."""
    # `admin` is a shell word that reads the live colour's port on the gateway (blue/green): the
    # URL curl used is echoed back for the message.
    out = remote(f"if [ ! -e {ROUTER_UNIT} ]; then echo router=none; exit 0; fi; err=$(mktemp); a=\"{admin}\"; "
                 f"curl -sS -m {timeout} -X {method} -w '\\n%{{http_code}}' \"$a\"{shlex.quote(path)} 2>\"$err\"; "
                 f"rc=$?; echo; echo \"curl=$rc $(systemctl is-active {ROUTER_SERVICE}) $a "
                 f"$(head -c 300 \"$err\" | tr '\\n' ' ')\"; rm -f \"$err\"", f"router {path}", target=gateway)
    if out.strip() == "router=none":
        return "none", ""
    reply, _, status = out.rpartition("\n")
    rc, state, used, reason = (status.removeprefix("curl=").split(" ", 3) + ["", "", ""])[:4]
    if rc != "0":
        raise RouterUnreachable(f"{gateway.name}: its router's admin API ({used}) does not answer "
                                f"(curl exit {rc}: {reason.strip() or 'no detail'}; {ROUTER_SERVICE} is {state})")
    body, _, code = reply.rpartition("\n")
    return code.strip(), body


def drain_from(gateways: list, url: str, also: tuple[str, ...] = ()) -> list[str]:
    """Take the node out of every gateway's rotation; returns notes on gateways without a router
    (a first deploy: nothing routes to the node there, nothing to drain). `also`: more URLs to take
    out (the router answers 200 for a URL it does not list, seen with vllm-router 0.1.17)."""
    notes = []
    for gw, admin in gateways:
        for each in [url, *also]:
            try:
                code, body = _router(gw, f"/remove_worker?url={each}", admin, "POST")
            except RouterUnreachable as exc:
                raise RouterUnreachable(f"cannot take {each} out of rotation, so it is not stopped: {exc}") from exc
            if code == "none":
                notes.append(f"{gw.name}: no router yet")
                break
            if code != "200":
                raise OperationError(f"{gw.name} refused to remove {each}: {code} {body.strip()[:200]}")
            if each != url:
                notes.append(f"{gw.name}: {each} out of rotation too")
    return notes


def listed_workers(gateway, admin: str) -> set[str]:
    """The URLs a gateway's router routes to now (none where no router answers)."""
    from r1deploy.drift.checks import router_workers  # what /list_workers answers, every shape of it

    code, body = _router(gateway, "/list_workers", admin)  # (an installed router that does not answer raises)
    return set(router_workers(json.loads(body)) or ()) if code == "200" else set()


def worker_health(gateway, urls: list[str]) -> dict[str, bool]:
    """Which of `urls` answer /health, asked from the gateway (where the router reaches them)."""
    if not urls:
        return {}
    probe = "; ".join(f"curl -fsS -m 5 -o /dev/null {shlex.quote(u + '/health')} && echo 'up {u}' || echo 'down {u}'"
                      for u in urls)
    out = remote(probe, "worker health", target=gateway)
    return {u: f"up {u}" in out.splitlines() for u in urls}


def ensure_another_serves(spec: Spec, gateways: list, url: str) -> None:
    """Issue 21 item 6: before a drain, another replica of the model must be in rotation and
    healthy on every gateway, as its router says now (not the inventory: two controllers, or a
    node left drained, show here). rollout_allow_outage accepts the outage instead."""
    if spec.rollout.allow_outage:
        return
    for gw, admin in gateways:
        listed = listed_workers(gw, admin)
        others = sorted(listed - {url}) if url in listed else []
        why = core.another_serves(url, listed, worker_health(gw, others), gw.name, spec.model.name)
        if why:
            raise PhaseFailed("plan", why)


def rejoin(gateways: list, url: str, timeout_s: int) -> list[str]:
    """add_worker polls the node's health before admitting it; 'already exists' is fine. A gateway
    without a router yet gets the node when its router starts (its worker list names it)."""
    notes = []
    for gw, admin in gateways:
        code, body = _router(gw, f"/add_worker?url={url}", admin, "POST", timeout=timeout_s)
        if code == "none":
            notes.append(f"{gw.name}: no router yet")
        elif code != "200" and "already exists" not in body:
            raise OperationError(f"{gw.name} did not admit {url}: {code} {body.strip()[:200]}")
    return notes


# --- the node ------------------------------------------------------------------------------

def _engine(spec: Spec) -> str:
    """This node's vLLM as checks on the node reach it: its bind address (the fleet address)."""
    return engine_local_url(spec, address(host))


def _in_flight(engine: str, target=None) -> int | None:
    out = remote(f"curl -fsS -m 5 {engine}/metrics || true", "metrics", target=target)
    return core.in_flight(out)


def wait_drained(engine: str, timeout_s: int | None, target=None, shutdown_s: int | None = None) -> str:
    """Until vLLM runs and queues nothing, twice in a row (a request the router picked just
    before the removal may still be connecting). `target`: the host it runs on (default: this one).
    `timeout_s` None: r1deploy.fleet.rollout.DEFAULT_DRAIN_S. What it returns says what is cut."""
    timeout_s = core.DEFAULT_DRAIN_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    zeros, count = 0, None
    time.sleep(1)
    while time.monotonic() < deadline:
        count = _in_flight(engine, target)
        if count is None:
            return "engine not answering: nothing to drain"
        zeros = zeros + 1 if count == 0 else 0
        if zeros >= 2:
            return "no request in flight"
        time.sleep(1)
    grace = f"{shutdown_s}s" if shutdown_s is not None else "rollout_shutdown_timeout_s"
    return (f"{'some' if count is None else count} request(s) still in flight after {timeout_s}s of drain: vLLM's shutdown timeout "
            f"gives them {grace} more, then CUTS what still runs")


def _unit_state(target=None) -> core.UnitState:
    return core.UnitState.parse(remote(f"systemctl show -p ActiveState,SubState,NRestarts {SERVICE}",
                                       "unit state", target=target))


def journal_since(since: float, lines: int = 400, target=None) -> str:
    # Enough lines to hold vLLM's own complaint: a rejected flag prints ~300 lines of usage.
    return remote(f"journalctl -u {SERVICE} --since @{int(since)} -n {lines} --no-pager -o cat || true", "journal",
                  target=target)


def wait_healthy(spec: Spec, started: float) -> str:
    """/health and /v1/models with the served name; a crash-looping unit fails in seconds."""
    model = spec.model.name
    baseline = _unit_state().restarts
    deadline = time.monotonic() + core.startup_timeout_s(spec)
    last_log = time.monotonic()
    while True:
        if serves(spec):
            return f"serves {model}"
        state = _unit_state()
        if core.UnitState(state.active, state.sub, state.restarts - baseline).crash_looping(
                spec.rollout.crashloop_restarts):
            raise PhaseFailed("healthy", f"{SERVICE} is crash-looping ({state.active}/{state.sub}, "
                              f"{state.restarts - baseline} restarts)", journal_since(started))
        if time.monotonic() > deadline:
            raise PhaseFailed("healthy", f"not serving after {core.startup_timeout_s(spec)}s",
                              journal_since(started))
        if time.monotonic() - last_log > 30:
            host.log(f"waiting for {SERVICE} to serve {model}")
            last_log = time.monotonic()
        time.sleep(2)


def _answers(engine: str) -> bool:
    """Whether the engine answers /health now. One that does not (a failed first deploy, a crash)
    serves nobody: nothing to drain, no other replica lost by restarting it, and a router still
    waiting for its workers (its admin API silent until one is healthy) cannot block the repair."""
    out = remote(f"curl -fsS -m 5 -o /dev/null {engine}/health && echo UP || echo DOWN", "health probe")
    return out.strip().endswith("UP")


def serves(spec: Spec) -> bool:
    """This host's vLLM answers /health and lists the served model (False while it starts)."""
    engine, model = _engine(spec), spec.model.name
    out = remote(f"curl -fsS -m 5 {engine}/health >/dev/null 2>&1 && "
                 f"curl -fsS -m 5 {curl_auth()} {engine}/v1/models || echo DOWN", "health probe")
    if out.strip().endswith("DOWN"):
        return False
    names = [m.get("id") for m in json.loads(out).get("data", [])]
    if model not in names:
        raise PhaseFailed("healthy", f"/v1/models lists {names}, not {model!r}")
    return True


def _agent(spec: Spec, module: str, args: list[str]) -> tuple[bool, dict]:
    venv = agent_venv(spec)
    argv = [f"{venv}/bin/python", "-m", module, *args]
    try:
        out, ok = remote(f"PYTHONPATH={venv}/src PYTHONDONTWRITEBYTECODE=1 {shlex.join(argv)}", module), True
    except OperationError as exc:  # exit 1 still prints the JSON
        out, ok = str(exc), False
    start = out.find("{")
    try:
        return ok, json.loads(out[start:out.rfind("}") + 1]) if start >= 0 else {}
    except ValueError:
        return False, {"error": out[-500:]}


def warm_up(spec: Spec) -> str:
    r = spec.rollout
    long_tokens = min(r.warmup_long_prompt_tokens, (spec.vllm.max_model_len or 4096) // 2)
    ok, data = _agent(spec, "r1deploy.serving.warmup", [
        _engine(spec), "--model", spec.model.name, *key_args(spec),
        "--system-prompt", r.warmup_system_prompt, "--sampling", json.dumps(r.warmup_sampling),
        "--concurrency", str(r.warmup_concurrency), "--long-tokens", str(long_tokens),
        "--max-tokens", str(r.warmup_max_tokens), "--timeout", str(spec.smoke.timeout_s)])
    if not ok or not data.get("ok"):
        raise PhaseFailed("warm-up", f"{data.get('failed', '?')} of {data.get('requests', '?')} warm-up "
                          f"requests failed: {[d['detail'] for d in data.get('detail', []) if not d['ok']][:2]}")
    return f"{data['requests']} requests, TTFT max {data['ttft_ms_max']} ms, median {data['ttft_ms_median']} ms"


def smoke(spec: Spec, canary: bool) -> str:
    from r1deploy.roles.smoke import run_smoke

    ok, data = run_smoke(spec, _engine(spec))
    if not ok:
        failed = [c for t in data.get("targets", []) for c in t["checks"] if not c["ok"]]
        raise PhaseFailed("smoke", "; ".join(f"{c['name']}: {c['detail']}" for c in failed) or "failed")
    stream = next((c for t in data["targets"] for c in t["checks"] if c["name"] == "chat-stream"), {})
    if canary:
        problems = core.slo_problems(spec, stream.get("ttft_ms"), stream.get("tokens_per_s"))
        if problems:
            raise PhaseFailed("smoke", "canary SLO: " + "; ".join(problems))
    rate = stream.get("tokens_per_s")
    return f"TTFT {stream.get('ttft_ms') or 0:.0f} ms, {rate or 0:.1f} tok/s"


# --- the turn ------------------------------------------------------------------------------

def _prove(spec: Spec, record: core.NodeRollout, started: float, canary: bool) -> None:
    with _Timer(record, "healthy") as t:
        t.detail = wait_healthy(spec, started)
    if spec.rollout.warmup:
        with _Timer(record, "warm-up") as t:
            t.detail = warm_up(spec)
    with _Timer(record, "smoke") as t:
        t.detail = smoke(spec, canary)


def _restart(spec: Spec, record: core.NodeRollout, release_dir: str, gateways: list, url: str,
             canary: bool, now: core.Served | None = None, drain_s: int | None = None, remember: bool = True) -> None:
    """`now`: where the running engine serves, when not at `url` (a changed vllm_port/vllm_host_ip):
    that URL is the one routers list, and the one whose requests the drain waits on."""
    if gateways and _answers(now.engine if now else _engine(spec)):
        try:
            ensure_another_serves(spec, gateways, now.url if now else url)  # the URL routers list now
        except RouterUnreachable as exc:  # item 3: a failed drain, before anything was touched
            with _Timer(record, "drain"):
                raise RouterUnreachable(f"cannot take {url} out of rotation, so it is not stopped: {exc}") from exc
        with _Timer(record, "drain") as t:
            notes = drain_from(gateways, now.url, (url,)) if now else drain_from(gateways, url)
            drained = wait_drained(now.engine if now else _engine(spec), drain_s, shutdown_s=spec.rollout.shutdown_timeout_s)
            t.detail = "; ".join(notes + [drained])
    with _Timer(record, "stop"):  # (a first deploy has nothing to stop)
        remote(f"if systemctl is-active --quiet {SERVICE}; then systemctl stop {SERVICE}; fi", "stop")
    with _Timer(record, "start"):
        started = activate(release_dir, remember=remember)
    _prove(spec, record, started, canary)


def _roll_back(spec: Spec, record: core.NodeRollout, failure: PhaseFailed, gateways: list, url: str,
               prior_previous: str | None) -> str:
    """Back to the previous release, proven like a new one, rejoined (at `url`: where that release
    serves). Returns what happened. `previous` keeps pointing where it did before the failed turn:
    the bad release is never a rollback target."""
    if not record.previous:
        remote(f"systemctl stop {SERVICE} || true", "stop")
        return "no previous release to go back to: the node is stopped and out of rotation"
    if not complete(record.previous):  # never a second cold start into a release that is not there
        remote(f"systemctl stop {SERVICE} || true", "stop")
        return (f"the previous release {record.previous} is missing or incomplete (pruned?): not started; "
                "the node is stopped and out of rotation")
    try:
        started = activate(f"{CONFIG_DIR}/releases/{record.previous}", remember=False)
        keep_previous(record.previous, prior_previous)
        _prove(spec, record, started, canary=False)
        if gateways:
            rejoin(gateways, url, core.startup_timeout_s(spec))
        return f"rolled back to {record.previous}, which serves again and is back in rotation"
    except (PhaseFailed, OperationError) as again:
        return f"rolled back to {record.previous}, which is NOT healthy either ({again}); out of rotation"


def roll_node(spec: Spec, release: str, batch: int, canary: bool, restart: bool, url: str,
              gateway_admins: list[tuple[str, str]],
              single_node_model: bool, now: core.Served | None = None, drain_s: int | None = None,
              rolling_back: bool = False) -> None:
    """This node's turn: restart into `release` (drained, proven, rejoined) or only rejoin.
    `now`: where the engine serves before the turn when that is not `url` (r1deploy.fleet.rollout.served_now);
    `drain_s`: the drain's limit (r1deploy.fleet.rollout.drain_timeout_s); `rolling_back`: `release`
    is the node's previous one (r1deploy rollback): afterwards `previous` goes one further back."""
    record = core.NodeRollout(host.name, batch, release, None)
    if ROLLOUT.stopped_by:
        record.outcome, record.reason = "held", ROLLOUT.held_message()
        _write_report(record)
        host.log(record.reason)
        return
    live, before = pointers()
    record.previous = (before if live == release else live) or None  # what a failure goes back to
    prior_previous = before
    try:
        gateways = [(connected(name), admin) for name, admin in gateway_admins]
        if restart and single_node_model and not spec.rollout.allow_outage and _unit_state().active == "active":
            raise PhaseFailed("plan", f"only {host.name} serves {spec.model.name}: this restart is an "
                              "outage; set rollout_allow_outage = True to accept it")
        if restart:
            _restart(spec, record, f"{CONFIG_DIR}/releases/{release}", gateways, url, canary, now, drain_s,
                     remember=not rolling_back)
            if rolling_back:
                keep_previous(release, before_in_history(release, live))
        else:
            _prove(spec, record, time.time(), canary=False)
        if gateways:
            with _Timer(record, "rejoin") as t:
                notes = rejoin(gateways, url, core.startup_timeout_s(spec))
                t.detail = "; ".join(notes) or f"in rotation on {', '.join(g.name for g, _ in gateways)}"
        record.outcome = "rolled out" if restart else "rejoined"
    except (PhaseFailed, OperationError) as exc:
        failure = exc if isinstance(exc, PhaseFailed) else PhaseFailed("rollout", str(exc))
        _fail(spec, record, failure, gateways if "gateways" in locals() else [], url, prior_previous, now)
    finally:
        _write_report(record)
    host.log(f"rollout: {record.outcome} " + "  ".join(f"{p.name} {p.seconds:.1f}s" for p in record.phases))


def _fail(spec: Spec, record: core.NodeRollout, failure: PhaseFailed, gateways: list, url: str,
          prior_previous: str | None, now: core.Served | None = None) -> None:
    ROLLOUT.stop(host.name, f"{failure.phase}: {failure.reason}")
    old_url = now.url if now else url  # where the release it goes back to serves
    stopped = False
    if failure.phase == "plan":  # nothing was touched
        back = "nothing was changed"
    elif failure.phase == "drain" or (failure.phase == "rollout" and not record.phases):
        back = back_in_rotation(gateways, old_url, "it")  # never stopped: it serves as before
    else:
        back, stopped = _roll_back(spec, record, failure, gateways, old_url, prior_previous), True
    record.outcome = "rolled back" if "rolled back to" in back and "NOT" not in back else "failed"
    if record.outcome == "failed" and stopped:  # (the gateway stage keeps it out; one never stopped stays in)
        ROLLOUT.out_of_rotation.update({url, old_url})
    record.reason = f"{failure.phase}: {failure.reason}"
    raise OperationError(f"release {record.release} failed on {host.name} at {failure.phase}: {failure.reason}"
                         + failure_story(failure, back))


def back_in_rotation(gateways: list, url: str, what: str) -> str:
    """A turn that failed before anything restarted: put the node back where it was."""
    try:
        rejoin(gateways, url, 60)
    except OperationError as exc:
        return f"not restarted; could not put {what} back in rotation ({exc})"
    return "not restarted"


def failure_story(failure: PhaseFailed, back: str, whose: str = "") -> str:
    """What a failed turn's error says after its first line: vLLM's own complaint, what was done
    about it, and the journal's last lines (of `whose`, for a group's member)."""
    said = core.engine_error_line(failure.journal) if failure.journal else None
    tail = "\n".join(failure.journal.splitlines()[-30:]) if failure.journal else ""
    return ((f"\nvLLM said: {said}" if said else "") + f"\n{back}; the rollout stops here."
            + (f"\nlast journal lines{whose}:\n{tail}" if failure.journal else ""))
