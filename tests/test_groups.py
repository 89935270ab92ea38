"""Serving groups: cross-host validation before connecting, launch modes, rollout units, health, drift."""

import pytest

from r1deploy.drift.groups import group_findings, member_tag
from r1deploy.drift.runs import Finding
from r1deploy.fleet.groups import gateway_targets, group_health, rollout_units, serving_groups
from r1deploy.fleet.validate import validate_inventory
from r1deploy.planner.launch import DATA_PARALLEL, MULTI_NODE, choose_launch
from r1deploy.spec import SpecError

R1 = {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": "56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad",
      "plan_gpu": "H100 SXM", "plan_gpus_per_node": 8, "plan_nodes": 2,
      "fleet_group": "r1-a", "fleet_group_head": "gpu-01"}


def apply_changes(hosts: dict, changes: dict) -> dict:
    """`HOST__key=value` sets a host's key, `=None` removes it (tests/test_pd.py uses it too)."""
    for key, value in changes.items():
        host, _, field = key.partition("__")
        if value is None:
            hosts[host].pop(field, None)
        else:
            hosts[host][field] = value
    return hosts


def members(**changes):
    hosts = {"gpu-01": {**R1, "vllm_host_ip": "10.0.0.1"}, "gpu-02": {**R1, "vllm_host_ip": "10.0.0.2"}}
    return apply_changes(hosts, changes)


def problems(hosts) -> list[str]:
    with pytest.raises(SpecError) as exc:
        validate_inventory(hosts.items())
    return [str(e) for e in exc.value.errors]


def test_a_consistent_group_validates_and_ranks_head_first():
    specs = validate_inventory(members().items())
    group = serving_groups(specs)["r1-a"]
    assert [(m.host, m.rank) for m in group.members] == [("gpu-01", 0), ("gpu-02", 1)]
    assert group.head_ip == "10.0.0.1"


@pytest.mark.parametrize("change, expected", [
    ({"gpu-02__model_revision": "0" * 40}, "host 'gpu-02': model_revision: '0000000000000000000000000000000000000000', "
                                           "but the head 'gpu-01' of group 'r1-a' has '56d4cbbb"),
    ({"gpu-02__install_vllm_version": "0.25.0"}, "host 'gpu-02': install_vllm_version: '0.25.0'"),
    ({"gpu-02__plan_gpus_per_node": 4}, "host 'gpu-02': plan_gpus_per_node: 4"),
    ({"gpu-02__plan_gpu": "H200"}, "host 'gpu-02': plan_gpu: 'H200'"),
    ({"gpu-02__vllm_host_ip": None}, "host 'gpu-02': vllm_host_ip: members of group 'r1-a' need their fleet address"),
    ({"gpu-02__fleet_group_head": "gpu-02"}, "host 'gpu-02': fleet_group_head: 'gpu-02', but other members"),
    ({"gpu-02__fleet_group": None}, "host 'gpu-02': fleet_group: plan_nodes = 2"),
])
def test_a_member_that_disagrees_is_named_with_its_key(change, expected):
    found = problems(members(**change))
    assert any(p.startswith(expected) for p in found), found


def test_group_size_must_be_the_plans_node_count():
    hosts = members()
    hosts["gpu-03"] = {**R1, "vllm_host_ip": "10.0.0.3"}
    assert any("plan_nodes: 2, but group 'r1-a' has 3 member(s) (gpu-01, gpu-02, gpu-03)" in p
               for p in problems(hosts))


def test_the_head_must_be_a_member_of_this_inventory():
    hosts = {h: {**d, "fleet_group_head": "gpu-09"} for h, d in members().items()}
    assert any("fleet_group_head: 'gpu-09' is not a host of this inventory" in p for p in problems(hosts))


def test_rollout_units_keep_a_group_whole_and_gateways_route_to_heads():
    hosts = {**members(), "gpu-10": {k: v for k, v in R1.items() if not k.startswith(("fleet_group", "plan_nodes"))}}
    specs = validate_inventory(hosts.items())
    assert rollout_units(["gpu-10", "gpu-02", "gpu-01"], specs) == [["gpu-10"], ["gpu-01", "gpu-02"]]
    assert gateway_targets(specs) == ["gpu-01", "gpu-10"]


def test_launch_modes_from_the_layout():
    tp_pp = choose_launch({"tensor-parallel-size": 8, "pipeline-parallel-size": 2}, 8, 2)
    dp_ep = choose_launch({"data-parallel-size": 16, "enable-expert-parallel": True}, 8, 2)
    assert (tp_pp.mode, dp_ep.mode) == (MULTI_NODE, DATA_PARALLEL)
    assert "experts sharded over all DP ranks" in dp_ep.why
    with pytest.raises(ValueError, match="TP8 × PP1 × DP1 does not split over 2 node"):
        choose_launch({"tensor-parallel-size": 8}, 8, 2)


def test_group_health_names_the_member_that_is_down_and_says_when_it_could_not_check():
    group = serving_groups(validate_inventory(members().items()))["r1-a"]
    assert group_health(group, True, {"gpu-01": "active", "gpu-02": "active"}).ok
    down = group_health(group, True, {"gpu-01": "active", "gpu-02": "failed"})
    assert (down.status, down.problems) == ("down", ["gpu-02 (worker rank 1): r1-vllm.service is failed"])
    assert group_health(group, None, {"gpu-01": "active", "gpu-02": None}).status == "unknown"


def test_drift_folds_member_reports_into_one_group_row():
    group = serving_groups(validate_inventory(members().items()))["r1-a"]
    reports = [Finding("gpu-01", "group", True, member_tag(group, "gpu-01")),
               Finding("gpu-01", "service", True, "running"), Finding("gpu-01", "answers", True, "ok"),
               Finding("gpu-02", "group", True, member_tag(group, "gpu-02")),
               Finding("gpu-02", "service", False, "r1-vllm.service not running")]
    [row] = group_findings(reports)
    assert (row.host, row.ok) == ("r1-a", False)
    assert "gpu-02 (worker rank 1)" in row.detail
    [partial] = group_findings(reports[:3])
    assert partial.ok is None and "1 of 2 member(s) sent no drift report" in partial.detail


@pytest.mark.parametrize("gpu, layout, launch", [
    ("H100 SXM", (8, 2, 1), MULTI_NODE),  # R1 exceeds one 8×H100 node: TP8 inside, PP2 across
    ("H200", (1, 1, 16), DATA_PARALLEL),  # vLLM's DeepSeek recipe: DP16 + EP over both nodes
])
def test_the_planner_chooses_r1s_two_node_layouts_and_says_how_they_launch(gpu, layout, launch):
    from r1deploy.planner import ModelSpec, plan
    from r1deploy.planner.catalog import find_gpu

    p = plan(ModelSpec.from_catalog("DeepSeek-R1"), find_gpu(gpu), 8, 2)
    assert p.fits and (p.tensor_parallel_size, p.pipeline_parallel_size, p.data_parallel_size) == layout
    assert p.enable_expert_parallel and p.launch == launch
    assert any(r.startswith(f"launch {launch}: ") for r in p.reasons)
    assert plan(ModelSpec.from_catalog("DeepSeek-R1"), find_gpu(gpu), 8, 1).launch is None


def test_multi_gpu_switches_default_off_without_nvlink_multicast_and_obey_the_spec():
    from r1deploy.serving.render import engine_args
    from r1deploy.spec import spec_from_host_data

    base = {k: v for k, v in R1.items() if not k.startswith(("fleet_group", "plan_nodes"))}
    planned = {"tensor-parallel-size": 8}
    lent = engine_args(spec_from_host_data("h", {**base, "vllm_nvlink_multicast": False}), planned)
    assert lent["disable-custom-all-reduce"] is True
    assert lent["compilation-config"] == {"pass_config": {"fuse_allreduce_rms": False}}
    own = engine_args(spec_from_host_data("h", base), planned)
    assert "disable-custom-all-reduce" not in own and "compilation-config" not in own
    chosen = engine_args(spec_from_host_data("h", {**base, "vllm_nvlink_multicast": False,
                                                   "vllm_allreduce_fusion": True}), planned)
    assert "compilation-config" not in chosen and chosen["disable-custom-all-reduce"] is True
    single = engine_args(spec_from_host_data("h", {**base, "vllm_nvlink_multicast": False}), {})
    assert "disable-custom-all-reduce" not in single  # one GPU: no all-reduce to switch off


# --------------------------------------------------------------------------- group rollout


def _fleet(**single):
    """One group (gpu-01 head, gpu-02) and one single node gpu-10, all serving R1."""
    lone = {k: v for k, v in R1.items() if not k.startswith(("fleet_group", "plan_nodes"))}
    return validate_inventory({**members(), "gpu-10": {**lone, **single}}.items())


def test_a_group_is_one_batch_and_the_single_node_serves_while_it_restarts():
    from r1deploy.fleet.rollout import plan_batches, replicas

    specs = _fleet()
    plan = plan_batches(specs.items())
    assert [b.units for b in plan.batches] == [(("gpu-01", "gpu-02"),), (("gpu-10",),)]
    assert plan.batch_of("gpu-02") == plan.batch_of("gpu-01") == 0 and plan.batch_of("gpu-10") == 1
    assert replicas("DeepSeek-R1", specs.items()) == 2 and not plan.notes
    # Even with room for two replicas at once, never both: one keeps serving.
    wide = {h: s.model_copy(update={"rollout": s.rollout.model_copy(update={"max_unavailable": 5, "canary": False})})
            for h, s in specs.items()}
    plan = plan_batches(wide.items())
    assert [list(b.nodes) for b in plan.batches] == [["gpu-01", "gpu-02"], ["gpu-10"]]
    assert "capped at 1 so one replica keeps serving" in plan.describe()


def test_a_model_served_by_one_group_only_is_an_outage():
    from r1deploy.fleet.rollout import plan_batches, replicas

    specs = validate_inventory(members().items())
    plan = plan_batches(specs.items())
    assert [b.nodes for b in plan.batches] == [("gpu-01", "gpu-02")]
    assert replicas("DeepSeek-R1", specs.items()) == 1
    assert "DeepSeek-R1: one serving group (r1-a: gpu-01, gpu-02) serves it; a restart is an outage" \
        in plan.describe()


def test_group_start_order_and_what_fails_a_starting_group():
    from r1deploy.fleet.groups import group_start, missing_members, start_order, stop_order

    group = serving_groups(validate_inventory(members().items()))["r1-a"]
    assert (stop_order(group), start_order(group)) == (["gpu-01", "gpu-02"], ["gpu-02", "gpu-01"])
    assert missing_members(group, {"gpu-02"}) == ["gpu-01"]
    running = {"gpu-01": ("active", False), "gpu-02": ("active", False)}
    assert group_start(group, True, running).status == "up"
    assert group_start(group, False, running).status == "starting"  # the head still loading
    looping = group_start(group, True, {**running, "gpu-02": ("activating", True)})
    assert (looping.status, looping.member) == ("failed", "gpu-02")
    assert looping.reason == "r1-vllm.service is crash-looping"
    dead = group_start(group, True, {**running, "gpu-02": ("failed", False)})
    assert (dead.member, dead.reason) == ("gpu-02", "r1-vllm.service is failed")
    # A worker that exited after our start, the head still at 200: the group failed.
    assert group_start(group, True, {**running, "gpu-02": ("inactive", False)}).member == "gpu-02"
    assert group_start(group, True, {**running, "gpu-02": ("activating", False)}).status == "starting"


def test_report_entries_name_the_group_and_the_member():
    from r1deploy.fleet.rollout import NodeRollout

    entry = NodeRollout("gpu-02", 0, "r2", "r1", group="r1-a", member="worker rank 1").as_dict()
    assert (entry["node"], entry["group"], entry["member"]) == ("gpu-02", "r1-a", "worker rank 1")
    assert "group" not in NodeRollout("gpu-10", 1, "r2", "r1").as_dict()
