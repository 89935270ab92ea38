"""Issue 21 item 1: a driver update is a rollout turn of the node's model, not an outage.

Real pyinfra operations (the GPU role's reboot, one per batch, run by pyinfra's own executor)
against hosts whose shells answer from a model of each node and of the gateway's router
(tests/fleetsim.py): a driver-branch change on a 2-node model reboots one node at a time, each
drained, rebooted, gated, healthy and rejoined before the next, and the router never lists
nobody. A lone replica is refused; a failed gate stops the rollout with the node out of rotation.
"""

import sys

from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops
from pyinfra.context import ctx_inventory, ctx_state
from r1deploy.roles.gpu_host import drain, ops
from r1deploy.roles.gpu_host.versions import Want
from r1deploy.roles.serve.rollout import ROLLOUT

from tests.fleetsim import Clock, SimGateway, SimNode, World

MODEL = {"model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "model_revision": "a" * 40,
         "vllm_startup_timeout_s": 60, "rollout_drain_timeout_s": 5}
IPS = {"gpu-1": "127.0.0.21", "gpu-2": "127.0.0.22"}
URLS = {name: f"http://{ip}:8000" for name, ip in IPS.items()}



def fleet(monkeypatch, tmp_path, nodes=("gpu-1", "gpu-2"), **data):
    monkeypatch.setenv("R1DEPLOY_REPORTS", str(tmp_path))
    clock = Clock()
    monkeypatch.setattr(sys.modules["r1deploy.roles.serve.rollout"], "time", clock)
    monkeypatch.setattr(ops, "time", clock)
    ROLLOUT.__init__()
    drain.DRAINED.clear()
    sims = {n: SimNode(n, installed="590.48.01", model="DeepSeek-R1-Distill-Qwen-7B") for n in nodes}  # a driver-branch change waits for a boot
    gw = SimGateway("gw", [URLS[n] for n in nodes], nodes={URLS[n]: sims[n] for n in nodes})
    host_data = {n: {**MODEL, **data, "vllm_host_ip": IPS[n]} for n in nodes}
    host_data["gw"] = {**MODEL, "fleet_role": "gateway"}
    world = World(*sims.values(), gw, data=host_data)
    world.nodes, world.gateway = sims, gw

    def gate(*_args):  # the GPU gate on the node model: what the reboot loaded, its verdict
        name = ops.host.name
        world.log.append((name, "GPU gate"))
        return world.sims[name].gate_ok, f"driver {world.sims[name].loaded}"
    monkeypatch.setattr(drain, "gate_now", gate)
    return world


def converge_gpu_stage(world):
    """The GPU role's reboot operations for every node, laid out and run as a deploy would."""
    with ctx_state.use(world.state), ctx_inventory.use(world.inventory):
        for name in world.nodes:
            target = world.inventory.get_host(name)
            with world.use(name):
                mine, count = drain.reboot_batches(name)
                for index in range(count):
                    add_op(world.state, ops.reboot_into_driver, host=target,
                           name=f"Reboot into the installed driver if needed, batch {index + 1}/{count}",
                           driver_package="nvidia-open-580", expected=Want("nvidia-open-580", prefix="590."),
                           allow_reboot=True, delay=0, services=("nvidia-persistenced",),
                           gate=(None, "nvidia", False, None), _if=lambda i=index, m=mine: m == i)
        run_ops(world.state)
    return {n: world.state.results[world.inventory.get_host(n)] for n in world.nodes}


def steps(world, name):
    """The turn's steps on `name`, in the order they happened across the fleet."""
    marks = {"/remove_worker?url=" + URLS[name]: "drain", "&& reboot )": "reboot", "GPU gate": "gate",
             "/v1/models": "healthy", "/add_worker?url=" + URLS[name]: "rejoin"}
    out = []
    for _host, text in world.log:
        for mark, step in marks.items():
            if mark in text and (step in ("drain", "rejoin") or _host == name) and (not out or out[-1][1] != step):
                out.append((world.log.index((_host, text)), step))
    return out


def test_driver_change_on_a_two_node_model_never_leaves_it_without_a_replica_issue_21_item_1(monkeypatch, tmp_path):
    world = fleet(monkeypatch, tmp_path)
    results = converge_gpu_stage(world)
    assert all(r.error_ops == 0 for r in results.values()), results
    one, two = steps(world, "gpu-1"), steps(world, "gpu-2")
    assert [s for _, s in one] == ["drain", "reboot", "gate", "healthy", "rejoin"]
    assert [s for _, s in two] == ["drain", "reboot", "gate", "healthy", "rejoin"]
    assert one[-1][0] < two[0][0]  # batch 2 starts after batch 1 is back in rotation
    assert world.gateway.history and min(len(w) for w in world.gateway.history) >= 1
    assert sorted(world.gateway.workers) == sorted(URLS.values())
    assert all(n.loaded == "590.48.01" and n.boot == 2 for n in world.nodes.values())


def test_a_lone_replica_is_not_rebooted_without_allow_outage_issue_21_item_1(monkeypatch, tmp_path):
    world = fleet(monkeypatch, tmp_path, nodes=("gpu-1",))
    results = converge_gpu_stage(world)
    assert results["gpu-1"].error_ops == 1
    assert world.nodes["gpu-1"].boot == 1 and world.gateway.workers == [URLS["gpu-1"]]
    assert "only gpu-1 serves" in ROLLOUT.reason


def test_a_failed_gate_stops_the_rollout_out_of_rotation_issue_21_item_1(monkeypatch, tmp_path):
    world = fleet(monkeypatch, tmp_path)
    world.nodes["gpu-1"].gate_ok = False
    results = converge_gpu_stage(world)
    assert results["gpu-1"].error_ops == 1 and results["gpu-2"].error_ops == 1
    assert world.nodes["gpu-2"].boot == 1  # held: never drained, never rebooted
    assert world.gateway.workers == [URLS["gpu-2"]]  # the failed node stays out; the other serves
    assert "GPU gate failed" in ROLLOUT.reason


def test_another_run_draining_the_other_replica_is_refused_live_issue_21_item_6(monkeypatch, tmp_path):
    """The live check: the router lists gpu-2 no more (another controller drained it), so gpu-1's
    drain is refused though the inventory counts two replicas."""
    world = fleet(monkeypatch, tmp_path)
    world.gateway.workers = [URLS["gpu-1"]]
    results = converge_gpu_stage(world)
    assert results["gpu-1"].error_ops == 1 and world.nodes["gpu-1"].boot == 1
    assert world.gateway.workers == [URLS["gpu-1"]]
    assert "would leave DeepSeek-R1-Distill-Qwen-7B with no serving replica" in ROLLOUT.reason
