"""Safe on a real fleet, on the lab (issue 21): a converge whose drain cannot reach a gateway's
router admin API stops before stopping any node, and says why (item 3).

Cheap: one converge on the shared lab that refuses at the first drain (no rollout runs), no load.
The fleet ends as it started: every node on the lab inventory's release, the router back up.
"""

import time

import pytest
from labharness import (
    ROUTER_PORT,
    converge,
    live_release,
    node_names,
    node_urls,
    rollout_report,
    router_workers,
    ssh,
    started_at,
)

pytestmark = pytest.mark.lab


def _router_back(lab) -> None:
    ssh(lab, "gateway", "systemctl start vllm-router")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if router_workers(lab) == node_urls(lab):
                return
        except ValueError:  # not answering yet
            pass
        time.sleep(2)
    raise AssertionError(f"the router did not come back with every node: {router_workers(lab)}")


def test_issue21_item3_an_unreachable_router_admin_api_stops_the_converge_before_any_node_stops(lab, tmp_path):
    before = {n: (live_release(lab, n), started_at(lab, n)) for n in node_names(lab)}
    # The unit stays installed (it is no first deploy); its admin API does not answer.
    assert ssh(lab, "gateway", "systemctl stop vllm-router").returncode == 0
    try:
        done = converge("--data", "vllm_max_model_len=1024", R1DEPLOY_REPORTS=str(tmp_path))
    finally:
        _router_back(lab)
    assert done.returncode != 0, done.out[-6000:]
    assert "gateway: its router's admin API" in done.out, done.out[-6000:]
    assert f"(http://127.0.0.1:{ROUTER_PORT}) does not answer (curl exit 7" in done.out
    assert "so it is not stopped" in done.out
    for name, (release, since) in before.items():  # no node stopped, restarted or moved
        assert (live_release(lab, name), started_at(lab, name)) == (release, since), name
    report = rollout_report(tmp_path)
    first = report["stopped_by"]
    by_node = {r["node"]: r for r in report["nodes"]}
    assert [p["phase"] for p in by_node[first]["phases"]] == ["drain"], by_node[first]
    assert by_node[first]["reason"].startswith("drain: cannot take http://")
    assert {r["outcome"] for n, r in by_node.items() if n != first} <= {"held"}
    assert router_workers(lab) == node_urls(lab)  # nothing left out of rotation
