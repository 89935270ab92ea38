"""A serving group's turn in a rolling update (roles/serve/group_turn.py), run for real against
pyinfra hosts whose shells answer from a model of the node (tests/fleetsim.py): what is drained,
in which order members stop and start, what a failure rolls back and how it is named."""

import json
import sys

import pytest
from pyinfra.api import OperationError
from r1deploy.roles.serve import group_turn
from r1deploy.roles.serve.rollout import ROLLOUT

from r1deploy.fleet import rollout as core
from r1deploy.fleet.groups import serving_groups
from r1deploy.fleet.validate import validate_inventory
from tests.fleetsim import Clock, SimGateway, SimNode, World

R1 = {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": "56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad",
      "plan_gpu": "H100 SXM", "plan_gpus_per_node": 8, "plan_nodes": 2, "vllm_startup_timeout_s": 60,
      "fleet_group": "r1-a", "fleet_group_head": "gpu-01.example"}
IPS = {"gpu-01.example": "127.0.0.11", "gpu-02.example": "127.0.0.12"}
HEAD_URL, SINGLE_URL = "http://127.0.0.11:8000", "http://127.0.0.13:8000"



@pytest.fixture
def fleet(tmp_path, monkeypatch):
    monkeypatch.setenv("R1DEPLOY_REPORTS", str(tmp_path))
    clock = Clock()
    monkeypatch.setattr(group_turn, "time", clock)
    monkeypatch.setattr(sys.modules["r1deploy.roles.serve.rollout"], "time", clock)  # (roles.serve.rollout is a function)
    ROLLOUT.__init__()  # one rollout per test
    specs = validate_inventory([(h, {**R1, "vllm_host_ip": ip}) for h, ip in IPS.items()])
    worker = SimNode("gpu-02.example", model="DeepSeek-R1")
    head = SimNode("gpu-01.example", model="DeepSeek-R1")
    head.head_of = [head, worker]
    gateway = SimGateway("gw.example", [HEAD_URL, SINGLE_URL])
    world = World(head, worker, gateway)
    world.group = serving_groups(specs)["r1-a"]
    world.turns = {h: {"spec": s, "release": "r2", "url": core.node_url(s, IPS[h]),
                       "gateway_admins": [("gw.example", "http://127.0.0.1:8081")] if h == "gpu-01.example" else []}
                   for h, s in specs.items()}
    world.head, world.worker, world.gateway, world.reports = head, worker, gateway, tmp_path
    return world


def roll(world, turns=None, single_replica=False):
    with world.use("gpu-01.example"):
        group_turn.roll_group(world.group, turns or world.turns, batch=0, canary=True, restart=True,
                              single_replica=single_replica)


def report(world):
    return {e["node"]: e for e in json.loads((world.reports / "rollout.json").read_text())["nodes"]}


def test_the_group_rolls_as_one_replica_drained_at_its_head_workers_started_first(fleet):
    roll(fleet)
    assert [(n.current, n.previous, n.running) for n in (fleet.head, fleet.worker)] == [("r2", "r1", "r2")] * 2
    stops, starts = fleet.did("systemctl stop r1-vllm"), fleet.did("systemctl restart r1-vllm")
    assert stops == ["gpu-01.example", "gpu-02.example"]  # head first
    assert starts == ["gpu-02.example", "gpu-01.example"]  # workers first: they wait at the head's rendezvous
    removed = next(i for i, (_, c) in enumerate(fleet.log) if "remove_worker" in c)
    assert removed < next(i for i, (_, c) in enumerate(fleet.log) if "systemctl stop" in c)
    assert [c.split("url=")[1].split("'")[0] for c in fleet.commands("remove_worker")] == [HEAD_URL]
    assert fleet.gateway.workers == [SINGLE_URL, HEAD_URL]  # the single node was never taken out
    assert set(fleet.did("/metrics")) == {"gpu-01.example"}  # only the head serves requests to wait for
    assert set(fleet.did("-m r1deploy.serving.smoke")) == {"gpu-01.example"}
    entries = report(fleet)
    assert {(n, e["group"], e["member"], e["outcome"]) for n, e in entries.items()} == {
        ("gpu-01.example", "r1-a", "head", "rolled out"), ("gpu-02.example", "r1-a", "worker rank 1", "rolled out")}
    assert [p["phase"] for p in entries["gpu-02.example"]["phases"]] == [
        "drain", "stop", "start", "healthy", "warm-up", "smoke", "rejoin"]


def test_a_worker_that_served_alone_is_drained_too_and_only_the_head_rejoins(fleet):
    """A node joining the group as its worker was a router's worker until now: it must not get
    requests while it restarts headless, and it never comes back into rotation."""
    worker_url = fleet.turns["gpu-02.example"]["url"]
    fleet.gateway.workers = [HEAD_URL, worker_url, SINGLE_URL]
    roll(fleet)
    removed = [c.split("url=")[1].split("'")[0] for c in fleet.commands("remove_worker")]
    assert removed == [HEAD_URL, worker_url]
    assert max(i for i, (_, c) in enumerate(fleet.log) if "remove_worker" in c) < next(
        i for i, (_, c) in enumerate(fleet.log) if "systemctl stop" in c)
    assert set(fleet.did("/metrics")) == {"gpu-01.example", "gpu-02.example"}  # each waited on until idle
    assert fleet.gateway.workers == [SINGLE_URL, HEAD_URL]
    drain = next(p for p in report(fleet)["gpu-01.example"]["phases"] if p["phase"] == "drain")
    assert f"{worker_url} out of rotation too" in drain["detail"]


def test_a_worker_in_crash_loop_rolls_every_member_back_and_names_it(fleet):
    fleet.worker.behaviour["r2"] = "crash"
    fleet.worker.error_line = "ValueError: Unrecognized --pipeline-parallel-size 3 for 2 nodes"
    with pytest.raises(OperationError) as failed:
        roll(fleet)
    message = str(failed.value)
    assert message.startswith("release r2 failed in serving group r1-a on gpu-02.example (worker rank 1) at "
                              "healthy: r1-vllm.service is crash-looping")
    assert "\nvLLM said: ValueError: Unrecognized --pipeline-parallel-size 3 for 2 nodes" in message
    assert "every member rolled back to its previous release; the group serves again" in message
    # Both back on r1, `previous` as before the turn (never the bad release), the head in rotation.
    assert [(n.current, n.previous, n.running) for n in (fleet.head, fleet.worker)] == [("r1", "r0", "r1")] * 2
    assert fleet.gateway.workers == [SINGLE_URL, HEAD_URL]
    assert fleet.did("systemctl restart r1-vllm")[-2:] == ["gpu-02.example", "gpu-01.example"]
    assert ROLLOUT.stopped_by == "gpu-02.example (group r1-a)"
    entries = report(fleet)
    assert {e["outcome"] for e in entries.values()} == {"rolled back"}
    assert entries["gpu-01.example"]["reason"] == "healthy on gpu-02.example (worker rank 1): " \
                                                  "r1-vllm.service is crash-looping"


def test_a_head_that_never_answers_times_out_and_the_group_goes_back(fleet):
    fleet.head.behaviour["r2"] = "hang"
    with pytest.raises(OperationError, match="on gpu-01.example \\(head\\) at healthy: group r1-a not serving "
                                             "after 60s") as failed:
        roll(fleet)
    assert "every member rolled back" in str(failed.value)
    assert (fleet.head.running, fleet.worker.running) == ("r1", "r1")


def test_a_model_served_by_this_group_only_is_not_restarted_without_rollout_allow_outage(fleet):
    with pytest.raises(OperationError, match="only group r1-a \\(gpu-01.example, gpu-02.example\\) serves "
                                             "DeepSeek-R1: this restart is an outage") as failed:
        roll(fleet, single_replica=True)
    assert "nothing was changed" in str(failed.value)
    assert not fleet.did("systemctl stop") and fleet.gateway.workers == [HEAD_URL, SINGLE_URL]


def test_a_run_that_leaves_out_a_member_refuses_the_group(fleet):
    with pytest.raises(OperationError, match="gpu-01.example not in this run: a serving group rolls whole"):
        roll(fleet, turns={"gpu-02.example": fleet.turns["gpu-02.example"]})
    assert not fleet.did("systemctl")


def test_after_a_failed_batch_the_group_is_held(fleet):
    ROLLOUT.stop("gpu-09.example", "smoke: failed")
    roll(fleet)
    assert not fleet.log
    assert {e["outcome"] for e in report(fleet).values()} == {"held"}


def test_the_head_takes_the_groups_turn_when_any_member_needs_one(fleet, monkeypatch):
    import r1deploy.roles.serve as serve_role

    state = core.NodeState("r1", "r1", True, True, None)
    turns = {h: {**t, "group": fleet.group, "state": state, "written": [], "restart": False}
             for h, t in fleet.turns.items()}
    monkeypatch.setattr(serve_role, "_TURNS", turns)
    assert serve_role._drives("gpu-01.example") and not serve_role._drives("gpu-02.example")
    with fleet.use("gpu-01.example"):
        assert not serve_role._wanted_unit("gpu-01.example")
        turns["gpu-02.example"]["restart"] = True  # only the worker's release changed
        assert serve_role._wanted_unit("gpu-01.example")
    del turns["gpu-01.example"]  # --limit left the head out: the worker takes the turn, to refuse it
    assert serve_role._drives("gpu-02.example")
