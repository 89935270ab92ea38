"""The rollout's decisions (r1deploy/fleet/rollout.py): batches, drain, crash loops, SLO, what restarts."""

from pathlib import Path

import pytest

from r1deploy.fleet import rollout as core
from r1deploy.serving.render import render_node
from r1deploy.spec import spec_from_host_data

BASE = {"model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "model_revision": "a" * 40}


def spec(**data):
    return spec_from_host_data("h", {**BASE, **data})


def names(plan):
    return [list(b.nodes) for b in plan.batches]


def test_one_node_at_a_time_with_the_first_as_canary():
    plan = core.plan_batches([(f"n{i}", spec()) for i in (1, 2, 3)])
    assert names(plan) == [["n1"], ["n2"], ["n3"]]
    assert plan.batches[0].canary and not plan.batches[1].canary
    assert plan.batch_of("n3") == 2 and plan.batch_of("gateway") is None


def test_batch_size_after_the_canary_and_never_the_whole_model():
    two = spec(rollout_max_unavailable=2)
    assert names(core.plan_batches([(f"n{i}", two) for i in range(1, 6)])) == [["n1"], ["n2", "n3"], ["n4", "n5"]]
    everything = spec(rollout_max_unavailable=10, rollout_canary=False)
    plan = core.plan_batches([(f"n{i}", everything) for i in (1, 2, 3)])
    assert names(plan) == [["n1", "n2"], ["n3"]]  # capped so one node keeps serving
    assert "capped at 2" in plan.describe()


def test_models_roll_side_by_side_and_a_lone_node_is_an_outage():
    other = spec(model_repo_id="deepseek-ai/DeepSeek-R1-Distill-Llama-70B")
    plan = core.plan_batches([("a1", spec()), ("a2", spec()), ("b1", other), ("gw", spec(fleet_role="gateway"))])
    assert names(plan) == [["a1", "b1"], ["a2"]]
    assert "one node (b1) serves it" in plan.describe()


def test_in_flight_sums_running_and_waiting_over_engines():
    text = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 2.0
vllm:num_requests_running{engine="1",model_name="tiny"} 1.0
vllm:num_requests_waiting{engine="0",model_name="tiny"} 3.0
vllm:num_requests_waiting_by_reason{engine="0",reason="capacity"} 9.0
"""
    assert core.in_flight(text) == 6
    assert core.in_flight("# nothing here\n") is None


def test_crash_loop_is_seen_from_systemd_state():
    looping = core.UnitState.parse("ActiveState=activating\nSubState=auto-restart\nNRestarts=1\n")
    assert looping.crash_looping(limit=2)
    starting = core.UnitState.parse("ActiveState=active\nSubState=running\nNRestarts=0\n")
    assert not starting.crash_looping(limit=2)
    assert core.UnitState.parse("ActiveState=failed\nSubState=failed\nNRestarts=0").crash_looping(2)


def test_engine_error_line_is_vllms_own_complaint():
    journal = """INFO 12-01 11:02:03 [api_server.py:1] vLLM API server version 0.32.0
Traceback (most recent call last):
  File "/opt/r1deploy/vllm-0.32.0/lib/python3.11/site-packages/vllm/entrypoints/openai/api_server.py", line 9
api_server.py: error: unrecognized arguments: --no-such-flag
r1-vllm.service: Main process exited, code=exited, status=2/INVALIDARGUMENT"""
    assert core.engine_error_line(journal) == "api_server.py: error: unrecognized arguments: --no-such-flag"


def test_engine_error_line_skips_vllms_usage_text():
    """Recorded on the lab: a flag vLLM 0.32 rejects, journal tail taken while the unit restarts
    (its usage text has lines like "[--log-error-stack | --no-log-error-stack]")."""
    journal = (Path(__file__).parent / "fixtures" / "journal-rejected-flag.txt").read_text()
    assert core.engine_error_line(journal) == "api_server.py: error: unrecognized arguments: --no-such-engine-flag"
    assert core.engine_error_line("ValueError: max_model_len 9000 > 4096\nINFO done") == \
        "ValueError: max_model_len 9000 > 4096"
    assert core.engine_error_line("[--log-error-stack | --no-log-error-stack]") is None


def test_canary_slo():
    strict = spec(rollout_canary_max_ttft_ms=500, rollout_canary_min_tokens_per_s=20)
    assert core.slo_problems(strict, 120.0, 55.0) == []
    problems = core.slo_problems(strict, 900.0, 5.0)
    assert "TTFT 900 ms > rollout_canary_max_ttft_ms 500" in problems[0] and "decode 5.0 tok/s" in problems[1]
    assert core.slo_problems(spec(), None, None) == []  # no SLO set, nothing judged


@pytest.mark.parametrize("state,restart", [
    (core.NodeState("r2", "r2", True, True, True), False),
    (core.NodeState("r1", "r2", True, True, True), True),  # pointer flipped, process still old
    (core.NodeState("r1", "r1", True, True, True), True),  # new release not live yet
    (core.NodeState(None, "r2", True, False, None), True),  # stopped
    (core.NodeState("r2", "r2", False, True, True), True),  # unit edited
])
def test_what_needs_a_restart(state, restart):
    assert core.needs_restart(state, "r2") is restart


def test_drained_node_rejoins_without_restart():
    left_drained = core.NodeState("r2", "r2", True, True, False)
    assert not core.needs_restart(left_drained, "r2") and core.needs_rejoin(left_drained)
    assert not core.needs_rejoin(core.NodeState("r2", "r2", True, True, None))


def test_startup_allowance_is_sized_per_model():
    assert core.startup_timeout_s(spec(vllm_startup_timeout_s=90)) == 90
    r1 = core.startup_timeout_s(spec(model_repo_id="deepseek-ai/DeepSeek-R1"))
    assert 25 * 60 <= r1 <= 40 * 60  # minutes for 671B
    assert core.startup_timeout_s(spec()) < r1


def test_every_serving_change_is_a_new_release_and_the_unit_is_part_of_it():
    a = render_node(spec(), "n1", "10.0.0.1")
    assert "r1-vllm.service" in a.files
    for change in ({"install_vllm_version": "0.27.0"}, {"model_revision": "b" * 40},
                   {"vllm_max_model_len": 1024}, {"vllm_env": {"VLLM_LOGGING_LEVEL": "DEBUG"}},
                   {"rollout_shutdown_timeout_s": 90}):
        assert render_node(spec(**change), "n1", "10.0.0.1").release != a.release, change
    assert render_node(spec(), "n1", "10.0.0.1").release == a.release


def test_unit_stops_gracefully_and_keeps_compile_caches_per_vllm_version():
    node = render_node(spec(rollout_shutdown_timeout_s=45), "n1", "10.0.0.1")
    assert node.engine_args["shutdown-timeout"] == 45
    assert "TimeoutStopSec=75" in node.files["r1-vllm.service"]
    assert node.env["TRITON_CACHE_DIR"] == "/var/cache/r1deploy/compile/vllm-0.26.0/triton"
    assert node.env["VLLM_CACHE_ROOT"].startswith("/var/cache/r1deploy/compile/vllm-0.26.0/")


def test_gateway_workers_written_by_name_or_with_a_slash_are_the_node_url_the_drain_uses():
    """issue 21 item 4: a worker written as the node's inventory name or with a trailing slash passed
    check but never equalled node_url, so gateways_of found no gateway and the node was stopped
    without a drain or a rejoin. Such entries are the node's URL now; others stay as written
    (check refuses them: tests/bad_inventories.py)."""
    nodes = [("n1", spec(), "10.0.0.1"), ("n2", spec(), "10.0.0.2"), ("n3", spec(vllm_port=8001), "n3.lan")]
    gw = spec(fleet_role="gateway", gateway_workers=["http://10.0.0.1:8000/", "http://n2:8000",
                                                      "http://N3.LAN:8001/", "http://10.0.0.9:8000"])
    assert core.gateway_workers(gw, nodes) == ["http://10.0.0.1:8000", "http://10.0.0.2:8000",
                                               "http://n3.lan:8001", "http://10.0.0.9:8000"]
    for name, _, address in nodes:
        assert core.gateways_of(core.node_url(dict((n, s) for n, s, _ in nodes)[name], address),
                                [("gw", gw)], nodes) == ["gw"]
    # Not a node's URL: another port, https, a path; or two nodes that answer to the name.
    for url in ("http://n2:8001", "https://10.0.0.2:8000", "http://10.0.0.2:8000/v1"):
        assert core.worker_node(url, nodes) is None
    assert core.worker_node("http://x:8000", [("x", spec(), "10.0.0.5"), ("y", spec(), "x")]) is None


def test_gateways_of_a_node():
    nodes = [("n1", spec(), "10.0.0.1"), ("n2", spec(), "10.0.0.2"),
             ("m1", spec(model_repo_id="deepseek-ai/DeepSeek-R1"), "10.0.0.3")]
    gws = [("gw", spec(fleet_role="gateway")), ("gw-r1", spec(fleet_role="gateway", model_repo_id="deepseek-ai/DeepSeek-R1"))]
    assert core.gateways_of("http://10.0.0.2:8000", gws, nodes) == ["gw"]
    assert core.gateways_of("http://10.0.0.3:8000", gws, nodes) == ["gw-r1"]


def test_issue21_item7_the_router_unit_depends_on_no_node_setting():
    """A node-side change (its startup allowance, its model) must not restart the router: its
    restart re-admits every node of its start list, those a rollout left out included."""
    from r1deploy.serving.render import render_router_unit

    gateway = {"fleet_role": "gateway"}
    base = render_router_unit(spec(**gateway), "gw")
    assert "--worker-startup-timeout-secs 1800 " in base  # gateway_worker_startup_timeout_s
    assert render_router_unit(spec(**gateway, vllm_startup_timeout_s=90), "gw") == base
    assert render_router_unit(spec(**gateway, model_repo_id="deepseek-ai/DeepSeek-R1"), "gw") == base
    assert "--worker-startup-timeout-secs 600 " in render_router_unit(
        spec(**gateway, gateway_worker_startup_timeout_s=600), "gw")


def test_issue21_item7_the_rotation_is_reconciled_after_any_router_restart():
    workers = ["http://a:8000", "http://b:8000"]
    # The router restarted (a new router version, a gateway setting): reconcile even though it
    # listed exactly the configured nodes before the run.
    assert core.reconcile_wanted(workers, workers, router_restarted=True, left_out=set())
    assert core.reconcile_wanted(None, workers, router_restarted=True, left_out=set())  # first start
    # This run's rollout left a node out: the router may still list it.
    assert core.reconcile_wanted(workers, workers, router_restarted=False, left_out={"http://b:8000"})
    assert core.reconcile_wanted(workers[:1], workers, router_restarted=False, left_out=set())
    assert not core.reconcile_wanted(workers, workers, router_restarted=False, left_out=set())
    assert not core.reconcile_wanted(None, workers, router_restarted=False, left_out=set())  # no router at all
