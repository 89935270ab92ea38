"""Blue/green for the gateway's router (issue 23 item 1): the decisions, pure.

Two colours of vllm-router may run on a gateway, each its own unit on its own loopback ports
(blue: `vllm-router.service` on gateway_router_port, the name and port a single router always
had, so an existing gateway is blue with nothing to migrate; green: `vllm-router-green.service`).
nginx's upstream include (r1deploy.serving.edge.ROUTER_UPSTREAM) names the live one: it is the
only record, read back from the host by every converge, so the next one knows the standby.

A change of the router's unit (policy, version, flags) or a reinstalled router goes to the
standby colour: started, proven (/health, a chat completion through it), nginx's upstream moved
to it with `nginx -t` and a graceful reload, the old colour drained and stopped. A change of its
workers never restarts anything (the admin API, roles/gateway). Every gateway change is judged by
what nginx logged meanwhile: a 5xx in the change window is a failed request and the change is
not "ok" (count_failed).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from r1deploy.serving.edge import ROUTER_UPSTREAM
from r1deploy.serving.render import ROUTER_SERVICE, render_template, router_venv
from r1deploy.spec import Spec


@dataclass(frozen=True)
class Colour:
    name: str  # "blue" | "green"
    service: str
    port: int  # its API (and admin routes), on loopback
    metrics_port: int

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def colours(spec: Spec) -> tuple[Colour, Colour]:
    """The port plan: (blue, green)."""
    g = spec.gateway
    return (Colour("blue", ROUTER_SERVICE, g.router_port, g.prometheus_port),
            Colour("green", ROUTER_SERVICE.replace("vllm-router", "vllm-router-green"),
                   g.router_green_port, g.prometheus_green_port))


_SERVER = re.compile(r"^\s*server\s+127\.0\.0\.1:(\d+)\s*;", re.M)


def live_colour(spec: Spec, upstream: str | None) -> Colour:
    """Which colour nginx routes to, from its upstream include (None: not written yet, a gateway
    from before blue/green or a first install: blue, the single router's own port). A port that
    is neither colour's (gateway_router_port changed in the spec) is read as blue: its switch
    then starts green on the new plan and moves nginx off the old port."""
    blue, green = colours(spec)
    found = _SERVER.search(upstream or "")
    return green if found and int(found.group(1)) == green.port else blue


def standby(spec: Spec, live: Colour) -> Colour:
    blue, green = colours(spec)
    return green if live == blue else blue


def render_upstream(colour: Colour) -> str:
    return render_template("router-upstream.conf.j2", colour=colour.name, port=colour.port,
                           service=colour.service, path=ROUTER_UPSTREAM)


@dataclass(frozen=True)
class SwitchPlan:
    """What a converge does to the router: `reason` empty means nothing (idempotent)."""

    live: Colour
    target: Colour
    reason: str = ""

    @property
    def switches(self) -> bool:
        return self.target != self.live


def plan_switch(spec: Spec, upstream: str | None, units: dict[str, str | None], active: dict[str, bool],
                desired: dict[str, str]) -> SwitchPlan:
    """`units`/`active`: per service, the digest of its unit file on the host (None: absent) and
    whether it runs; `desired`: per colour name, the digest of the unit the spec renders for it.
    A live colour that does not run (a first install, a router that never came up) is installed
    in place: nothing is served through it, so there is nothing to lose. A live router whose unit
    differs from the render: the standby takes over (a reinstalled router too: `reinstalled`)."""
    live = live_colour(spec, upstream)
    if not active.get(live.service):
        return SwitchPlan(live, live, "first install" if units.get(live.service) is None
                          else "the live router does not run")
    if units.get(live.service) != desired[live.name]:
        return SwitchPlan(live, standby(spec, live), "the router's unit changed (policy, version or flags)")
    return SwitchPlan(live, live)


def reinstalled(plan: SwitchPlan, spec: Spec) -> SwitchPlan:
    """The live router's packages were reinstalled under it (same unit): the standby takes over."""
    return plan if plan.switches or plan.reason else \
        SwitchPlan(plan.live, standby(spec, plan.live), "the router's packages were reinstalled")


# --- the change window: requests nginx logged while a gateway changed -----------------------

# r1_edge (templates/r1-gateway.conf.j2): '... [$time_local] "$method $uri" $status ... t=$msec'
_LINE = re.compile(r'\[(?P<local>[^\]]+)\] "[^"]*" (?P<status>\d{3}) .*?(?: t=(?P<msec>\d+\.\d+))?\s*$')


def parse_line(line: str) -> tuple[float, int, bool] | None:
    """(epoch seconds, HTTP status, precise); None: not an r1_edge line or no readable time.
    `precise` False: a line without t=$msec (written by an nginx worker from before the reload
    that brought it into the format), timed by $time_local to the second."""
    m = _LINE.search(line)
    if not m:
        return None
    if m["msec"]:
        return float(m["msec"]), int(m["status"]), True
    from datetime import datetime

    try:
        return datetime.strptime(m["local"], "%d/%b/%Y:%H:%M:%S %z").timestamp(), int(m["status"]), False
    except ValueError:
        return None


@dataclass
class WindowReport:
    """Requests nginx finished in [start, end] and how many of them failed (5xx)."""

    start: float
    end: float
    requests: int = 0
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    unreadable: int = 0  # lines of the window that could not be read
    cut: int = 0  # requests still open on an old router when it was stopped (a drain that ran out)
    checked: bool = True  # False: the access log could not be read at all
    changes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if not self.checked:
            return "could not check"
        return "ok" if self.failed == 0 and self.cut == 0 else "failed"

    def summary(self) -> str:
        what = "; ".join(self.changes) or "gateway change"
        if not self.checked:
            return f"{what}: requests failed during it: could not check (nginx's access log unreadable)"
        codes = ", ".join(f"{c} x{n}" for c, n in sorted(self.statuses.items()) if c >= 500)
        return (f"{what}: {self.failed} of {self.requests} requests failed (5xx) in {self.end - self.start:.1f}s"
                + (f" ({codes})" if codes else "") + (f"; {self.cut} cut when the old router stopped" if self.cut else "")
                + (f"; {self.unreadable} log lines unreadable" if self.unreadable else ""))

    def as_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict, "summary": self.summary()}


def count_failed(lines: list[str] | None, start: float, end: float, changes: list[str] | None = None) -> WindowReport:
    """5xx among the requests logged in [start, end]. A line with only $time_local (one-second
    resolution) counts when its second overlaps the window: a failure is never left out for
    being near an edge. `lines` None: the log could not be read."""
    report = WindowReport(start, end, changes=list(changes or []))
    if lines is None:
        report.checked = False
        return report
    for line in lines:
        if not line.strip():
            continue
        parsed = parse_line(line)
        if parsed is None:
            report.unreadable += 1
            continue
        ts, status, precise = parsed
        if not (start <= ts <= end if precise else start - 1 < ts <= end):
            continue
        report.requests += 1
        report.statuses[status] = report.statuses.get(status, 0) + 1
        report.failed += status >= 500
    return report


# --- drift: the live router against the spec --------------------------------------------------

def router_drift(spec: Spec, live: Colour, proc: dict, pd_mode: bool = False) -> list[str]:
    """What the live router's process runs that the spec does not say (empty: as the spec says).
    `proc`: roles/gateway/facts.RouterArgv. Its argv when /proc still has it (flags it really started
    with); vllm-router renames its process, so otherwise: the router venv it mapped (its version) and
    that it started after its unit file was last written and reloaded (it runs that file's flags,
    which the `unit` check compares with the spec). `pd_mode`: each side has its own policy flag."""
    if not proc:
        return [f"{live.service} (live, {live.name}) runs no process"]
    cmdline = proc.get("argv", [])
    if "--port" not in cmdline:
        return _process_drift(spec, live, proc)
    flags = dict(zip(cmdline, cmdline[1:], strict=False))
    g = spec.gateway
    policies = {"--prefill-policy": g.pd_prefill_policy, "--decode-policy": g.pd_decode_policy} if pd_mode \
        else {"--policy": g.policy}
    want = {**policies, "--port": str(live.port)}
    out = [f"{flag} {flags.get(flag, '(none)')}, the spec says {value}"
           for flag, value in want.items() if flags.get(flag) != value]
    # The console script runs under its venv's python: argv is [python, .../bin/vllm-router, ...].
    script = next((a for a in cmdline if a.endswith("/bin/vllm-router")), cmdline[0])
    if script != f"{router_venv(spec)}/bin/vllm-router":
        version = re.search(r"/router-([^/]+)/bin/", script)
        out.append(f"vllm-router {version.group(1) if version else script}, the spec says "
                   f"{spec.install.router_version}")
    return out


def _process_drift(spec: Spec, live: Colour, proc: dict) -> list[str]:
    """A renamed router process: its version from the venv it mapped, its flags from its unit file."""
    out = []
    want = f"{router_venv(spec)}/"
    venvs = proc.get("venvs", [])
    if venvs and want not in venvs:
        version = re.search(r"/router-([^/]+)/$", venvs[0])
        out.append(f"vllm-router {version.group(1) if version else venvs[0]}, the spec says {spec.install.router_version}")
    if proc.get("need_reload"):
        out.append(f"{live.service}: its unit file changed and systemd was not reloaded")
    elif proc.get("unit_mtime", 0) > proc.get("started", 0) > 0:
        out.append(f"{live.service} (live, {live.name}) runs since before its unit file was last written: "
                   "a restart or switch is pending")
    return out
