"""The router's blue/green stage (roles/gateway/router.py), planned against gateways whose facts are
given (tests/factharness.py), and its switch run against a scripted gateway: what a converge
does for no change, a policy change, a first install and a switch that died half-way; the order
of a switch (standby up, same rotation, a chat through it, nginx moved, old drained, stopped); a
standby that fails its proof never gets traffic; a window with a 5xx fails the converge."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from pyinfra.api import OperationError, deploy
from r1deploy.roles.gateway import router as stage
from r1deploy.roles.gateway import window
from r1deploy.roles.gateway.facts import RouterColours

from r1deploy.fleet import bluegreen as bg
from r1deploy.serving import edge
from r1deploy.serving.render import render_router_unit
from r1deploy.spec import spec_from_host_data
from tests.factharness import World, plan

GW = {"model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "model_revision": "a" * 40, "fleet_role": "gateway"}
UNITS = "/etc/systemd/system/"
SPEC: list = []


class _Venv:
    """The router's package operation: `did_change` is what pyinfra answers when executing."""

    def __init__(self, changed: bool = False):
        self.changed = changed

    def did_change(self) -> bool:
        return self.changed


@deploy("Gateway")
def _gateway():
    spec, venv = SPEC
    stage.router_stage(spec, venv, stage.router_plan(spec))


def _world(live: str | None, units: dict[str, str], active: dict[str, bool]) -> World:
    spec = spec_from_host_data("gw", GW)
    blue, green = bg.colours(spec)
    files = {UNITS + name: text for name, text in units.items()}
    upstream = bg.render_upstream(blue if live == "blue" else green) if live else None
    if upstream:
        files[edge.ROUTER_UPSTREAM] = upstream
    seen = {"upstream": upstream, "units": {n: stage._sha(t) for n, t in units.items()}, "active": active}
    return World(facts={RouterColours: seen}, files=files,
                 services={n.removesuffix(".service"): (a, a) for n, a in active.items()})


def _runs(spec, world: World, venv: _Venv | None = None) -> dict[str, list[str]]:
    """Operation name -> its commands, for every operation that would run and change something:
    earlier ones 'run' without a change, then each one's _if is asked as pyinfra does when executing."""
    SPEC[:] = [spec, venv or _Venv()]
    state, commands = plan(_gateway, {"gw": ({}, world)})
    target = state.inventory.get_host("gw")
    out: dict[str, list[str]] = {}
    for op_hash in state.get_op_order():
        name = sorted(state.op_meta[op_hash].names)[0]
        data = state.ops[target][op_hash]
        conditions = data.global_arguments.get("_if") or []
        wanted = all(c() for c in (conditions if isinstance(conditions, list) else [conditions]))
        mine = [c for c in commands["gw"] if c.startswith(f"[{name}]")]
        if wanted and mine:
            out[name.removeprefix("Gateway | ")] = mine
        data.operation_meta.set_complete(True, [], None)
    return out


def _spec(**extra):
    return spec_from_host_data("gw", {**GW, **extra})


def test_a_converge_with_no_router_change_touches_nothing():
    spec = _spec()
    world = _world("blue", {"vllm-router.service": render_router_unit(spec, "gw", "blue")},
                   {"vllm-router.service": True, "vllm-router-green.service": False})
    assert _runs(spec, world) == {}


def test_a_policy_change_starts_the_standby_colour_and_never_restarts_the_live_one():
    old, new = _spec(), _spec(gateway_policy="round_robin")
    world = _world("blue", {"vllm-router.service": render_router_unit(old, "gw", "blue")},
                   {"vllm-router.service": True, "vllm-router-green.service": False})
    runs = _runs(new, world)
    assert list(runs) == ["Unit vllm-router-green.service (standby, green)", "Router blue/green: blue -> green"]
    assert "--policy round_robin" in runs["Unit vllm-router-green.service (standby, green)"][0]
    assert not any("systemctl restart" in c for cs in runs.values() for c in cs)


def test_the_next_change_goes_back_to_blue():
    old, new = _spec(gateway_policy="round_robin"), _spec()
    world = _world("green", {"vllm-router.service": render_router_unit(_spec(gateway_policy="random"), "gw", "blue"),
                             "vllm-router-green.service": render_router_unit(old, "gw", "green")},
                   {"vllm-router.service": False, "vllm-router-green.service": True})
    assert list(_runs(new, world)) == ["Unit vllm-router.service (standby, blue)", "Router blue/green: green -> blue"]


def test_a_reinstalled_router_switches_colour_instead_of_restarting():
    spec = _spec()
    world = _world("blue", {"vllm-router.service": render_router_unit(spec, "gw", "blue")},
                   {"vllm-router.service": True, "vllm-router-green.service": False})
    assert list(_runs(spec, world, _Venv(changed=True))) == [
        "Unit vllm-router-green.service (standby, green)", "Router blue/green: blue -> green"]


def test_a_first_install_is_blue_in_place_with_nginxs_upstream_written():
    runs = _runs(_spec(), _world(None, {}, {}))
    # (The daemon-reload and the restart follow the unit's upload when it changed: here every
    # earlier operation is taken as unchanged.)
    assert list(runs) == ["nginx: the router's upstream (live colour)", "Unit vllm-router.service",
                          "Enable vllm-router.service (blue)"]
    assert "server 127.0.0.1:8081;" in "\n".join(runs["nginx: the router's upstream (live colour)"])


def test_a_standby_left_running_by_a_switch_that_died_is_stopped():
    spec = _spec()
    world = _world("green", {"vllm-router.service": render_router_unit(spec, "gw", "blue"),
                             "vllm-router-green.service": render_router_unit(spec, "gw", "green")},
                   {"vllm-router.service": True, "vllm-router-green.service": True})
    assert list(_runs(spec, world)) == ["Stop vllm-router.service (not live)"]


# --- the switch, against a scripted gateway --------------------------------------------------

class Gateway:
    """Answers the switch's commands as a gateway would; records them in order."""

    def __init__(self, chat: str = "200", log: list[str] | None = None, drain: str = "drained 3"):
        self.chat, self.log, self.ran, self.drain = chat, log or [], [], drain
        self.workers = {8081: ["http://10.0.0.11:8000"], 8082: ["http://10.0.0.11:8000", "http://10.0.0.12:8000"]}

    def __call__(self, command: str, what: str, **_) -> str:
        self.ran.append(what)
        if command.startswith("date +%s.%N; stat"):
            return "1800000000.000 100"
        if what == "requests during the change":
            return "\n".join(["1800000010.000", *self.log])
        if "/list_workers" in command:
            return json.dumps({"urls": self.workers[int(re.search(r":(\d+)/list_workers", command)[1])]})
        if "/remove_worker" in command:
            port, url = re.search(r":(\d+)/remove_worker\?url=([^\"]+)", command).groups()
            self.workers[int(port)].remove(url)
        if what.startswith("chat through"):
            return f"{self.chat}\n" + ('{"choices": [{"message": {"content": "hi"}}]}' if self.chat == "200" else "")
        if what == "drain":
            return self.drain
        return ""


@pytest.fixture
def gateway(monkeypatch):
    logged: list[str] = []
    fake_host = SimpleNamespace(name="gw", log=logged.append, log_styled=lambda m, **_: logged.append(m))
    for module in (stage, window):
        monkeypatch.setattr(module, "host", fake_host)
    monkeypatch.setenv("R1DEPLOY_REPORTS", str(__import__("tempfile").mkdtemp()))

    def use(gw: Gateway) -> list[str]:
        monkeypatch.setattr(stage, "remote", gw)
        monkeypatch.setattr(window, "remote", gw)
        return logged
    return use


def _switch():
    blue, green = bg.colours(_spec())
    stage.switch(blue, green, "the router's unit changed", "m", startup_s=5, drain_s=10, timeout_s=5)


def _line(status: int, t: float) -> str:
    return f'10.0.0.9 key=alice [07/Dec/2026:23:00:00 +0000] "POST /v1/chat/completions" {status} 1 0.1 0.1 t={t}'


def test_a_switch_proves_the_standby_before_nginx_moves_and_stops_the_old_one_last(gateway):
    gw = Gateway(log=[_line(200, 1800000001.0), _line(200, 1800000002.0)])
    logged = gateway(gw)
    _switch()
    assert gw.ran == ["change window", "start vllm-router-green.service", "vllm-router-green.service /health",
                      "blue workers", "green workers", "remove worker", "green workers", "chat through vllm-router-green.service",
                      "nginx: upstream to green", "drain", "stop the old colour", "requests during the change"]
    assert gw.workers[8082] == gw.workers[8081]  # the rotation the live one had, not the start list
    assert logged[-1].startswith("router blue -> green (the router's unit changed); blue drained in 3s: "
                                 "0 of 2 requests failed (5xx)")


def test_a_standby_that_cannot_answer_a_chat_is_stopped_and_nginx_never_moves(gateway):
    gw = Gateway(chat="502")
    gateway(gw)
    with pytest.raises(OperationError, match="did not answer a chat completion: HTTP 502"):
        _switch()
    assert "nginx: upstream to green" not in gw.ran and gw.ran[-1] == "stop vllm-router-green.service"


def test_a_switch_that_failed_requests_fails_the_converge_with_the_count(gateway):
    gateway(Gateway(log=[_line(200, 1800000001.0), _line(502, 1800000002.0)]))
    with pytest.raises(OperationError, match=r"1 of 2 requests failed \(5xx\).*not hitless"):
        _switch()
    report = json.loads((__import__("pathlib").Path(__import__("os").environ["R1DEPLOY_REPORTS"])
                         / "gateway-gw.json").read_text())
    assert report[-1]["verdict"] == "failed" and report[-1]["failed"] == 1


def test_the_nginx_switch_checks_the_config_first_and_puts_the_old_include_back_if_refused():
    ran: list[str] = []
    blue, green = bg.colours(_spec())
    stage_remote = stage.remote
    try:
        stage.remote = lambda command, what, **_: ran.append(command) or ""
        stage._point_nginx(green)
    finally:
        stage.remote = stage_remote
    cmd = ran[0]
    assert cmd.index("nginx -t -q") < cmd.index("systemctl reload nginx") < cmd.index(edge.LOADED_MARK)
    assert f"else mv {edge.ROUTER_UPSTREAM}.prev {edge.ROUTER_UPSTREAM}; exit 1" in cmd
    assert "server 127.0.0.1:8082;" in cmd and "restart nginx" not in cmd


def test_the_rollouts_admin_calls_reach_the_live_colour_through_a_real_shell(tmp_path, monkeypatch):
    """roles/serve/rollout._router's command, run by sh with curl against a router stand-in on the
    port nginx's include names: the shell word of router_admin is expanded where the command runs."""
    import importlib
    import shutil
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    rollout = importlib.import_module("r1deploy.roles.serve.rollout")  # (the package's `rollout` is a deploy)

    if not shutil.which("curl"):
        pytest.skip("curl is not installed here")
    seen: list[str] = []

    class Router(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Router)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = _spec(gateway_router_green_port=server.server_port)
        include, unit = tmp_path / "router-upstream.conf", tmp_path / "vllm-router.service"
        include.write_text(bg.render_upstream(bg.colours(spec)[1]))
        unit.write_text("")
        monkeypatch.setattr(edge, "ROUTER_UPSTREAM", str(include))
        monkeypatch.setattr(rollout, "ROUTER_UNIT", str(unit))
        monkeypatch.setattr(rollout, "remote", lambda command, what, target=None: subprocess.run(
            ["sh", "-c", command], capture_output=True, text=True).stdout.rstrip("\n"))
        code, body = rollout._router(SimpleNamespace(name="gw"), "/remove_worker?url=http://10.0.0.11:8000",
                                     edge.router_admin(spec), "POST")
    finally:
        server.shutdown()
    assert (code, body) == ("200", "ok") and seen == ["/remove_worker?url=http://10.0.0.11:8000"]


def test_the_window_reads_only_what_nginx_appended_meanwhile_through_a_real_shell(tmp_path, monkeypatch):
    import subprocess
    import time

    log = tmp_path / "r1-gateway.access.log"
    log.write_text(_line(502, time.time() - 60) + "\n")  # before the change: not its failure
    monkeypatch.setattr(window, "ACCESS_LOG", str(log))
    monkeypatch.setattr(window, "remote", lambda command, what, **_: subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, check=True).stdout.rstrip("\n"))
    opened = window.open_window()
    with log.open("a") as f:
        f.write("\n".join([_line(200, time.time()), _line(504, time.time())]) + "\n")
    report = window.close_window(opened, ["test"])
    assert (report.requests, report.failed, report.unreadable) == (2, 1, 0)
    log.write_text("")  # rotated meanwhile: what the new file holds is the window's
    assert window.close_window(opened, ["test"]).requests == 0
    log.unlink()  # nginx never served: nothing failed
    assert window.close_window(opened, ["test"]).verdict == "ok"


def test_a_drain_that_runs_out_stops_the_old_router_and_fails_the_converge_with_what_it_cut(gateway):
    """A stream cut mid-way logs its 200: the connections left on the old router are counted as failed."""
    gateway(Gateway(log=[_line(200, 1800000001.0)], drain="left 1 2"))
    with pytest.raises(OperationError, match=r"0 of 1 requests failed \(5xx\).*2 cut when the old router stopped"):
        _switch()


def test_the_drain_probe_runs_in_a_real_shell_and_does_not_count_itself(monkeypatch):
    """No nginx here: nothing is shutting down, so it is drained at once (the probe's own grep and
    shell carry the pattern in their argv and must not be read as an nginx worker)."""
    import subprocess

    monkeypatch.setattr(stage, "remote", lambda command, what, **_: subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, check=True).stdout)
    import socket

    with socket.socket() as probe:  # a port nothing here connects to
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert stage._drain(bg.colours(_spec(gateway_router_port=port))[0], 2) == ("blue drained in 0s", 0)
