"""A single node's turn in a rolling update (roles/serve/rollout.py), run for real against pyinfra
hosts whose shells answer from a model of the node and the gateway (tests/fleetsim.py): what is
refused before a stop, which URL is drained, what a drain that runs out says, where a rollback goes."""

import json
import sys

import pytest
from pyinfra.api import OperationError
from r1deploy.roles.serve import release
from r1deploy.roles.serve.facts import EngineRelease
from r1deploy.roles.serve.rollout import ROLLOUT

from r1deploy.fleet import rollout as core
from r1deploy.serving.render import engine_bind
from r1deploy.spec import spec_from_host_data
from tests.fleetsim import Clock, SimGateway, SimNode, World

rollout = sys.modules["r1deploy.roles.serve.rollout"]  # (the name roles.serve.rollout is a function there)

TINY = {"model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "model_revision": "a" * 40,
        "vllm_startup_timeout_s": 60, "vllm_host_ip": "127.0.0.11", "rollout_warmup": False}
URL, OTHER = "http://127.0.0.11:8000", "http://127.0.0.12:8000"
ADMIN = [("gw.example", "http://127.0.0.1:8081")]



@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("R1DEPLOY_REPORTS", str(tmp_path))
    monkeypatch.setattr(sys.modules["r1deploy.roles.serve.rollout"], "time", Clock())
    ROLLOUT.__init__()  # one rollout per test
    node = SimNode("gpu-01.example", model="DeepSeek-R1-Distill-Qwen-7B", history=["r0", "r1"])
    gateway = SimGateway("gw.example", [URL, OTHER])
    w = World(node, gateway)
    w.node, w.gateway, w.reports = node, gateway, tmp_path
    return w


def spec(**data):
    return spec_from_host_data("gpu-01.example", {**TINY, **data})


def roll(world, release="r2", s=None, **kwargs):
    s = s or spec()
    with world.use("gpu-01.example"):
        rollout.roll_node(s, release, batch=0, canary=False, restart=True, url=core.node_url(s, "127.0.0.11"),
                          gateway_admins=ADMIN, single_node_model=False, **kwargs)


def phases(world):
    entry = json.loads((world.reports / "rollout-gpu-01.example.json").read_text())
    return {p["phase"]: p["detail"] for p in entry["phases"]}


def first(world, what):
    return next(i for i, (_, c) in enumerate(world.log) if what in c)


def test_issue21_item3_an_unreachable_router_fails_the_turn_before_the_stop_naming_the_gateway(world):
    world.gateway.router = "down"  # installed, but its admin API does not answer
    with pytest.raises(OperationError) as failed:
        roll(world)
    message = str(failed.value)
    assert message.startswith("release r2 failed on gpu-01.example at drain: cannot take "
                              f"{URL} out of rotation, so it is not stopped: gw.example: its router's admin API "
                              "(http://127.0.0.1:8081) does not answer (curl exit 7: curl: (7) Failed to connect")
    assert "vllm-router.service is inactive" in message
    assert not world.did("systemctl stop") and not world.did("systemctl restart")
    assert (world.node.current, world.node.running) == ("r1", "r1")
    assert ROLLOUT.stopped_by == "gpu-01.example"


def test_issue21_item3_a_gateway_without_a_router_yet_is_a_first_deploy_and_allowed(world):
    world.gateway.router = "absent"  # the gateway stage that installs it runs after the rollout
    roll(world)
    assert world.node.running == "r2"
    assert phases(world)["drain"].startswith("gw.example: no router yet")
    assert phases(world)["rejoin"] == "gw.example: no router yet"


def test_issue21_item5_a_moved_port_drains_the_url_the_routers_list_now_and_rejoins_the_new_one(world):
    moved = spec(vllm_port=8001)
    now = core.served_now(moved, "127.0.0.11", engine_bind(moved, "127.0.0.11"), "127.0.0.11", 8000)
    assert now == core.Served(URL, URL)
    roll(world, s=moved, now=now)
    removed = [c.split("url=")[1].split("'")[0] for c in world.commands("remove_worker")]
    assert removed[0] == URL  # the old URL leaves the router before the node stops
    assert first(world, f"remove_worker?url={URL}") < first(world, "systemctl stop")
    assert world.commands("/metrics")[0].startswith(f"curl -fsS -m 5 {URL}/metrics")  # its requests waited on
    assert world.gateway.workers == [OTHER, "http://127.0.0.11:8001"]


def test_issue21_item5_a_failed_turn_after_a_move_rejoins_the_old_release_at_its_old_url(world):
    moved = spec(vllm_port=8001)
    world.node.behaviour["r2"] = "crash"
    with pytest.raises(OperationError, match="rolled back to r1, which serves again"):
        roll(world, s=moved, now=core.Served(URL, URL))
    assert world.node.running == "r1"
    assert world.gateway.workers == [OTHER, URL]


def test_issue21_item5_the_live_address_comes_from_the_running_release():
    base = spec()
    at = lambda s, bind, port: core.served_now(s, "127.0.0.11", engine_bind(s, "127.0.0.11"), bind, port)  # noqa: E731
    assert at(base, "127.0.0.11", 8000) is None  # nothing moved
    assert at(base, None, None) is None  # nothing runs, nothing rendered
    assert at(spec(vllm_port=9000), "0.0.0.0", 8000) == core.Served(URL, "http://127.0.0.1:8000")
    assert at(base, "127.0.0.9", 8000) == core.Served("http://127.0.0.9:8000", "http://127.0.0.9:8000")
    facts = EngineRelease().process(["live=/etc/r1deploy/releases/r1", "current=/etc/r1deploy/releases/r1",
                                     "previous=/etc/r1deploy/releases/r0", "previous_complete=", "active=active",
                                     "unit=abc", "bind=127.0.0.11", "port=8000"])
    assert (facts["bind"], facts["port"], facts["previous"], facts["previous_complete"]) == (
        "127.0.0.11", 8000, "r0", False)


def test_issue21_item8_the_drain_waits_as_long_as_the_edge_allows_and_says_what_it_cuts(world):
    gateway = spec_from_host_data("gw.example", {**TINY, "fleet_role": "gateway", "gateway_read_timeout_s": 2400})
    assert core.drain_timeout_s(spec(), [gateway]) == 2400  # the default: what the edge lets a client wait
    assert core.drain_timeout_s(spec(), []) == core.DEFAULT_DRAIN_S == 1800
    assert core.drain_timeout_s(spec(rollout_drain_timeout_s=60), [gateway]) == 60
    world.node.in_flight = 2  # two long answers that never end
    roll(world, drain_s=60)
    assert phases(world)["drain"] == ("2 request(s) still in flight after 60s of drain: vLLM's shutdown timeout "
                                      "gives them 30s more, then CUTS what still runs")


def test_issue21_item9_activate_refuses_a_missing_release_before_touching_anything(world):
    world.node.gone.add("r0")
    with world.use("gpu-01.example"), pytest.raises(OperationError, match="release /etc/r1deploy/releases/r0 is "
                                                                          "missing or incomplete"):
        release.activate("/etc/r1deploy/releases/r0")
    assert (world.node.current, world.node.previous, world.node.running) == ("r1", "r0", "r1")
    start = world.commands("systemctl restart")[0]  # the shell: check, install, then flip, then start
    order = [start.index(w) for w in ("test -f", "install -m 644", "ln -sfn", "systemctl restart")]
    assert order == sorted(order)
    assert "; systemctl restart" not in start  # never after a failed step


def test_issue21_item9_a_failed_turn_whose_previous_release_is_gone_stops_without_a_second_cold_start(world):
    world.node.behaviour["r2"] = "crash"
    world.node.gone.add("r1")  # pruned by hand
    with pytest.raises(OperationError, match="the previous release r1 is missing or incomplete \\(pruned\\?\\): "
                                             "not started; the node is stopped and out of rotation"):
        roll(world)
    assert len(world.commands("systemctl restart")) == 1  # the failed release's start only
    assert (world.node.current, world.node.running) == ("r2", None)


def test_issue21_item9_two_rollbacks_go_back_two_releases_never_back_to_the_bad_one(world):
    world.node.history = ["r0", "r1", "r2"]
    world.node.current, world.node.previous, world.node.running = "r2", "r1", "r2"
    roll(world, release="r1", rolling_back=True)
    assert (world.node.current, world.node.previous, world.node.running) == ("r1", "r0", "r1")
    roll(world, release="r0", rolling_back=True)  # the second rollback: further back, not to r2
    assert (world.node.current, world.node.previous, world.node.running) == ("r0", None, "r0")
    assert world.node.history == ["r0", "r1", "r2"]  # rollbacks are no steps forward


def test_issue21_item9_a_forward_step_is_remembered_once(world):
    roll(world)
    roll(world, release="r3")
    assert world.node.history == ["r0", "r1", "r2", "r3"]
    assert core.previous_in_history(["r0", "r1", "r2", "r1"], "r1", "r2") == "r0"
    assert core.previous_in_history([], "r1", None) is None


def test_issue21_item3_a_node_refused_at_the_drain_is_not_kept_out_of_rotation_by_the_gateway_stage(world):
    """It was never stopped: the gateway stage's reconcile (which runs when a rollout left a node
    out) must not remove a node that serves as before."""
    world.gateway.router = "down"
    with pytest.raises(OperationError):
        roll(world)
    assert ROLLOUT.out_of_rotation == set()
    world.gateway.router = "up"
    world.node.behaviour["r2"] = "hang"
    world.node.gone.add("r1")
    ROLLOUT.__init__()
    with pytest.raises(OperationError):
        roll(world)
    assert ROLLOUT.out_of_rotation == {URL}  # stopped, not back: out


@pytest.mark.parametrize("previous, complete, refusal", [
    ("r0", False, "the previous release r0 is missing or incomplete in /etc/r1deploy/releases \\(pruned\\?\\): "
                  "nothing was changed"),
    (None, False, "no previous release to roll back to"),
])
def test_issue21_item9_a_rollback_to_a_gone_previous_release_is_refused_before_anything(previous, complete, refusal):
    from pyinfra.api import DeployError, deploy
    from r1deploy.roles.serve import serve

    from tests.factharness import World as Facts
    from tests.factharness import plan

    @deploy("Rollback")
    def rollback():
        serve(to_previous=True)

    facts = {"live": "r1", "current": "r1", "previous": previous, "previous_complete": complete,
             "current_dir": "/etc/r1deploy/releases/r1", "active": True, "unit_sha256": "x", "bind": None, "port": None}
    with pytest.raises(DeployError, match=f"gpu-01.example: {refusal}"):
        plan(rollback, {"gpu-01.example": (TINY, Facts(facts={EngineRelease: facts}))})


def test_a_node_that_serves_nobody_is_repaired_without_a_drain_even_while_the_router_is_silent(world):
    """A failed first deploy: the engine is down, and vllm-router (waiting for its workers to turn
    healthy) leaves its admin API silent. The next converge must start the engine, not refuse at a
    drain of a node that serves nobody (seen on the lab: the fleet could not be repaired)."""
    world.node.running = None
    world.gateway.router = "down"
    try:
        roll(world)
    except OperationError as exc:  # the rejoin still needs the router: that is the gateway stage's
        assert "drain" not in str(exc).split(":")[0], exc
    assert not world.commands("remove_worker")
    restarts = world.commands("systemctl restart r1-vllm.service")
    assert restarts and "/r2" in restarts[0]  # started the new release; the router alone decides the rest
