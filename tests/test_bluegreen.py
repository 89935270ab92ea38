"""Blue/green for the gateway's router (issue 23 item 1): the pure decisions in
r1deploy/fleet/bluegreen.py — the port plan, which colour is live (read back from nginx's upstream
include as rendered), what a converge does, the 5xx of a change window counted from access-log
lines in the format templates/r1-gateway.conf.j2 renders, and the live router's drift."""

from __future__ import annotations

import hashlib
import subprocess
import time

from r1deploy.roles.gateway.facts import RouterArgv, RouterColours

from r1deploy.fleet import bluegreen as bg
from r1deploy.serving import edge
from r1deploy.serving.render import render_router_unit
from r1deploy.spec import spec_from_host_data

GW = {"model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "model_revision": "a" * 40, "fleet_role": "gateway"}


def _spec(**extra):
    return spec_from_host_data("gw", {**GW, **extra})


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _desired(spec) -> dict[str, str]:
    return {c: _sha(render_router_unit(spec, "gw", c)) for c in ("blue", "green")}


def test_the_port_plan_keeps_blue_where_a_single_router_always_was():
    blue, green = bg.colours(_spec())
    assert (blue.service, blue.port, blue.metrics_port) == ("vllm-router.service", 8081, 29000)
    assert (green.service, green.port, green.metrics_port) == ("vllm-router-green.service", 8082, 29001)
    unit = render_router_unit(_spec(), "gw", "green")
    assert "--port 8082 " in unit and "--prometheus-port 29001 " in unit and "(green)" in unit


def test_the_live_colour_is_what_nginxs_upstream_include_says():
    spec = _spec()
    blue, green = bg.colours(spec)
    assert bg.live_colour(spec, bg.render_upstream(green)) == green
    assert bg.live_colour(spec, bg.render_upstream(blue)) == blue
    assert bg.live_colour(spec, None) == blue  # a gateway from before blue/green: its router is blue
    assert bg.standby(spec, green) == blue and bg.standby(spec, blue) == green


def test_router_admin_reads_the_live_port_on_the_host_when_the_command_runs(tmp_path, monkeypatch):
    """The shell word every admin caller sends: blue's port without an include, the include's after a switch."""
    spec = _spec()
    include = tmp_path / "router-upstream.conf"
    monkeypatch.setattr(edge, "ROUTER_UPSTREAM", str(include))
    word = lambda: subprocess.run(["sh", "-c", f'echo "{edge.router_admin(spec)}/list_workers"'],  # noqa: E731
                                  capture_output=True, text=True, check=True).stdout.strip()
    assert word() == "http://127.0.0.1:8081/list_workers"
    include.write_text(bg.render_upstream(bg.colours(spec)[1]))
    assert word() == "http://127.0.0.1:8082/list_workers"


def test_a_converge_that_changes_nothing_plans_nothing():
    spec = _spec()
    blue, green = bg.colours(spec)
    units = {blue.service: _desired(spec)["blue"], green.service: None}
    plan = bg.plan_switch(spec, bg.render_upstream(blue), units, {blue.service: True}, _desired(spec))
    assert not plan.switches and plan.reason == ""


def test_a_policy_change_goes_to_the_standby_and_back():
    old, new = _spec(), _spec(gateway_policy="round_robin")
    blue, green = bg.colours(new)
    units = {blue.service: _desired(old)["blue"], green.service: None}
    plan = bg.plan_switch(new, bg.render_upstream(blue), units, {blue.service: True}, _desired(new))
    assert (plan.live, plan.target) == (blue, green) and "policy" in plan.reason
    # Next change: green is live, blue (stopped, its old unit) is the standby.
    units = {blue.service: _desired(old)["blue"], green.service: _desired(new)["green"]}
    back = bg.plan_switch(old, bg.render_upstream(green), units, {green.service: True}, _desired(old))
    assert (back.live, back.target) == (green, blue)


def test_a_change_of_the_routers_workers_is_no_unit_change():
    """Workers reach the live router through its admin API (roles/gateway _reconcile): never a switch."""
    spec, more = _spec(), _spec(gateway_workers=["http://10.0.0.11:8000", "http://10.0.0.12:8000"])
    assert _desired(more) == _desired(spec)


def test_a_router_version_change_is_a_unit_change():
    new = _spec(install_router_version="0.1.18")
    assert _desired(new)["blue"] != _desired(_spec())["blue"]


def test_a_first_install_or_a_router_that_never_ran_is_installed_in_place():
    spec = _spec()
    blue, _ = bg.colours(spec)
    first = bg.plan_switch(spec, None, {}, {}, _desired(spec))
    assert not first.switches and first.reason == "first install" and first.live == blue
    dead = bg.plan_switch(spec, None, {blue.service: "0" * 64}, {blue.service: False}, _desired(spec))
    assert not dead.switches and "does not run" in dead.reason


def test_a_reinstalled_router_with_the_same_unit_switches_too():
    spec = _spec()
    blue, green = bg.colours(spec)
    steady = bg.SwitchPlan(blue, blue)
    assert bg.reinstalled(steady, spec).target == green
    first = bg.SwitchPlan(blue, blue, "first install")
    assert bg.reinstalled(first, spec) == first


def _line(status: int, t: float | None, path: str = "/v1/chat/completions") -> str:
    """A line as the r1_edge log_format of templates/r1-gateway.conf.j2 writes it."""
    local = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(t or 0))
    line = f'10.0.0.9 key=alice [{local}] "POST {path}" {status} 512 0.250 0.249'
    return line + (f" t={t:.3f}" if t is not None else "")


def test_the_log_format_ends_with_msec_the_window_reads():
    site = edge.render_site(_spec(), "gw", False)
    fmt = site[site.index("log_format"):site.index(";", site.index("log_format"))]
    assert fmt.rstrip("'").endswith("t=$msec") and "$status" in fmt and "[$time_local]" in fmt


def test_the_window_counts_5xx_logged_in_it_and_only_those():
    t0 = 1_800_000_000.0
    lines = [_line(200, t0 - 5), _line(502, t0 - 0.5), _line(200, t0 + 0.2), _line(502, t0 + 0.4),
             _line(504, t0 + 1.0), _line(401, t0 + 1.5), _line(500, t0 + 9)]
    report = bg.count_failed(lines, t0, t0 + 2, ["router blue -> green (policy)"])
    assert (report.requests, report.failed, report.verdict) == (4, 2, "failed")
    assert "2 of 4 requests failed (5xx)" in report.summary() and "502 x1, 504 x1" in report.summary()
    assert "router blue -> green" in report.summary()


def test_a_clean_window_is_ok_and_says_zero():
    t0 = 1_800_000_000.0
    report = bg.count_failed([_line(200, t0 + i / 10) for i in range(10)], t0, t0 + 2)
    assert report.verdict == "ok" and report.summary().startswith("gateway change: 0 of 10 requests failed")


def test_lines_from_before_msec_was_in_the_format_count_by_their_second():
    """The reload that brings t=$msec: old workers still log the old format during the window."""
    t0 = 1_800_000_000.4
    lines = [_line(502, None).replace("[01/Jan/1970:00:00:00 +0000]",
                                      time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", time.gmtime(t0)))]
    assert bg.count_failed(lines, t0, t0 + 1).failed == 1
    assert bg.count_failed(["garbage"], t0, t0 + 1).unreadable == 1


def test_an_unreadable_log_could_not_be_checked_and_is_not_ok():
    report = bg.count_failed(None, 1.0, 2.0)
    assert report.verdict == "could not check" and "could not check" in report.summary()
    assert report.as_dict()["verdict"] == "could not check"


def test_the_live_routers_drift_is_read_from_its_argv():
    spec = _spec()
    blue, _ = bg.colours(spec)
    venv = f"{spec.install.root}/router-{spec.install.router_version}"
    argv = [f"{venv}/bin/python", f"{venv}/bin/vllm-router", "--host", "127.0.0.1", "--port", "8081",
            "--policy", "cache_aware"]
    assert bg.router_drift(spec, blue, {"argv": argv}) == []
    wrong = bg.router_drift(_spec(gateway_policy="round_robin", install_router_version="0.1.18"), blue, {"argv": argv})
    assert wrong == ["--policy cache_aware, the spec says round_robin",
                     "vllm-router 0.1.17, the spec says 0.1.18"]
    assert bg.router_drift(spec, blue, {}) == ["vllm-router.service (live, blue) runs no process"]


def test_a_renamed_router_process_is_judged_by_its_venv_and_its_start_after_the_unit():
    """vllm-router 0.1.17 renames its process to "vllm::router" (seen on the lab): no argv in /proc."""
    spec = _spec()
    blue, _ = bg.colours(spec)
    venv = f"{spec.install.root}/router-{spec.install.router_version}/"
    fine = {"argv": ["vllm::router"], "venvs": [venv], "started": 200, "unit_mtime": 100, "need_reload": False}
    assert bg.router_drift(spec, blue, fine) == []
    old = {**fine, "venvs": [f"{spec.install.root}/router-0.1.16/"]}
    assert bg.router_drift(spec, blue, old) == ["vllm-router 0.1.16, the spec says 0.1.17"]
    stale = bg.router_drift(spec, blue, {**fine, "started": 50})
    assert stale and "runs since before its unit file was last written" in stale[0]
    assert "not reloaded" in bg.router_drift(spec, blue, {**fine, "need_reload": True})[0]


def test_the_facts_read_what_the_host_prints():
    said = RouterColours().process(["@@upstream", "# live: green", "server 127.0.0.1:8082;",
                                    "@@unit vllm-router.service", "ab" * 32, "@@active inactive",
                                    "@@unit vllm-router-green.service", "", "@@active active"])
    assert said == {"upstream": "# live: green\nserver 127.0.0.1:8082;",
                    "units": {"vllm-router.service": "ab" * 32, "vllm-router-green.service": None},
                    "active": {"vllm-router.service": False, "vllm-router-green.service": True}}
    assert RouterColours().process(["@@upstream", "@@absent"])["upstream"] is None
    seen = RouterArgv().process(["@@argv", "vllm::router", "", "@@venv", "/opt/r1deploy/router-0.1.17/",
                                 "@@started", "200", "@@unit", "100", "@@reload", "no"])
    assert seen == {"argv": ["vllm::router"], "venvs": ["/opt/r1deploy/router-0.1.17/"], "started": 200,
                    "unit_mtime": 100, "need_reload": False}
    assert RouterArgv().process([]) == {}


def test_the_colours_fact_runs_in_a_real_shell(tmp_path):
    """Its command as the host runs it (no unit files here, perhaps no systemd): nothing is read as present."""
    include = tmp_path / "router-upstream.conf"
    include.write_text(bg.render_upstream(bg.colours(_spec())[1]))
    fact = RouterColours()
    for upstream, live in ((include, "green"), (tmp_path / "absent.conf", "blue")):
        out = subprocess.run(["sh", "-c", fact.command(upstream=str(upstream), units=["r1-no-such.service"])],
                             capture_output=True, text=True).stdout.splitlines()
        said = fact.process(out)
        assert bg.live_colour(_spec(), said["upstream"]).name == live
        assert said["units"].get("r1-no-such.service") is None and said["active"]["r1-no-such.service"] is False


def test_drift_wants_nginxs_upstream_to_be_exactly_the_live_colours_render():
    """nginx -T lists the include: a hand edit that sends traffic elsewhere is named, the render is not."""
    from r1deploy.drift import intruder as di

    spec = _spec()
    green = bg.colours(spec)[1]
    want = {edge.ROUTER_UPSTREAM: bg.render_upstream(green)}
    assert di.nginx_live("gw", want, {edge.ROUTER_UPSTREAM: di.text_digest(bg.render_upstream(green))})[0].ok
    rogue = "server 127.0.0.1:9999;\n"
    hand = bg.render_upstream(bg.live_colour(spec, rogue))  # an unknown port reads as blue: not what is loaded
    found = di.nginx_live("gw", {edge.ROUTER_UPSTREAM: hand}, {edge.ROUTER_UPSTREAM: di.text_digest(rogue)})[0]
    assert found.ok is False and "router-upstream.conf differs from the render" in found.detail
