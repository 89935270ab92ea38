"""A serving group on the lab, through deploy/main.py: node1 + node2 serve one replica with
tensor parallel 2 across the lab bridge (lab/inventories/lab_group.py), node3 serves alone.

One shared lab (3 nodes + gateway, tests/labharness.py, converged with lab/inventories/lab.py). In
order: under load, a converge to the group inventory (plus a setting change, so every replica
rolls: the group whole in one batch while node3 serves, then node3 while the group serves) loses
no request, the router lists the head and node3 only, the worker runs headless, and a user's
chat through the gateway answers; the worker's unit stopped by hand is named by the drift check
(the group's row and the worker's), a converge brings the group back, the next check is clean;
under load, back to the lab inventory (only when another lab module follows).
"""

import re

import openai
import pytest
from labharness import (
    PY,
    assert_no_user_saw_it,
    converge,
    gateway_auth,
    gateway_url,
    host_ip,
    lab_model,
    later_fleet_users,
    node_names,
    node_urls,
    rollout_report,
    router_workers,
    run,
    ssh,
    started_at,
    under_load,
)

pytestmark = [pytest.mark.lab, pytest.mark.lab_full]  # make test-full: group restarts take minutes on 2 cores
GROUP_INVENTORY = "lab/inventories/lab_group.py"
GROUP = "lab-a"
# Every replica gets a new release in the first converge (node3 too, so the report shows both
# batches); every later run on the group inventory carries it, so nothing else differs.
SETTING = ["--data", "vllm_max_model_len=1024"]
LOAD = {"max_seconds": 2400, "max_requests": 10000}  # as long as a converge may take, bounded
CURRENT_YAML = "cat /etc/r1deploy/current/vllm.yaml"


@pytest.fixture(scope="module")
def members(lab):
    """(head, worker, single node), as lab/inventories/lab_group.py makes them."""
    nodes = node_names(lab)
    if len(nodes) < 3:
        pytest.skip("a serving group beside a single node needs a lab of 3 nodes (R1LAB_NODES)")
    return nodes[0], nodes[1], nodes[2]


def url(lab, name: str) -> str:
    return f"http://{host_ip(lab, name)}:8000"


def chats_answered(lab, count: int = 6) -> int:
    """A user's chat completions through the edge (one session each, so the router spreads them)."""
    client = openai.OpenAI(base_url=f"{gateway_url(lab)}/v1", max_retries=0, timeout=300, **gateway_auth(lab))
    answered = 0
    for i in range(count):
        reply = client.chat.completions.create(model=lab_model(lab), max_tokens=8,
                                               messages=[{"role": "user", "content": f"Say {i}."}],
                                               extra_headers={"X-Session-ID": f"group-smoke-{i}"})
        answered += bool(reply.choices) and reply.usage.completion_tokens > 0
    print(f"chat through the gateway: {answered}/{count} answered")
    return answered


def drift_run(reports):
    return run(PY, "-m", "r1deploy", "drift-run", GROUP_INVENTORY, "--reports", str(reports), *SETTING,
               "--timeout", "900", timeout=1000)


def drift_row(output: str, host: str, check: str, state: str) -> str | None:
    """The table row `r1deploy drift` prints for (host, check) in that state, or None."""
    found = re.search(rf"^{re.escape(host)} +{re.escape(check)} +{state} .*$", output, re.M)
    return found.group(0) if found else None


def group_deployed(lab, worker: str) -> bool:
    return "headless: true" in ssh(lab, worker, CURRENT_YAML).stdout.splitlines()


def print_phases(report: dict) -> None:
    print("rollout:\n" + "\n".join(
        f"{r['node']} batch {r['batch']} {r.get('member', 'single')} {r['outcome']}: "
        + "  ".join(f"{p['phase']} {p['seconds']:.1f}s" for p in r["phases"]) for r in report["nodes"]))


def test_a_group_and_a_single_node_roll_out_with_zero_failed_requests(lab, members, tmp_path):
    head, worker, single = members
    done, seen = under_load(lab, lambda: converge(*SETTING, inventory=GROUP_INVENTORY,
                                                  R1DEPLOY_REPORTS=str(tmp_path)), **LOAD)
    assert done.returncode == 0, done.out[-8000:]
    assert_no_user_saw_it(seen)  # node3 served while the group restarted, the group while node3 did

    report = rollout_report(tmp_path)
    print_phases(report)
    assert report["stopped_by"] is None, report
    by_node = {r["node"]: r for r in report["nodes"]}
    assert sorted(by_node) == sorted(members)
    assert {n: (r.get("group"), r.get("member"), r["batch"], r["outcome"]) for n, r in by_node.items()} == {
        head: (GROUP, "head", 1, "rolled out"),
        worker: (GROUP, "worker rank 1", 1, "rolled out"),
        single: (None, None, 2, "rolled out"),
    }
    group_phases = [p["phase"] for p in by_node[head]["phases"]]
    assert group_phases == ["drain", "stop", "start", "healthy", "warm-up", "smoke", "rejoin"], group_phases

    routed = router_workers(lab)
    print(f"router: {len(routed)} worker(s): {', '.join(routed)}")
    assert routed == sorted([url(lab, head), url(lab, single)])
    worker_yaml = ssh(lab, worker, CURRENT_YAML).stdout.splitlines()
    assert "headless: true" in worker_yaml and "node-rank: 1" in worker_yaml, worker_yaml
    head_yaml = ssh(lab, head, CURRENT_YAML).stdout.splitlines()
    assert "node-rank: 0" in head_yaml and "headless: true" not in head_yaml, head_yaml
    assert chats_answered(lab) == 6


def test_a_stopped_worker_is_named_by_drift_and_a_converge_brings_the_group_back(lab, members, tmp_path):
    head, worker, single = members
    if not group_deployed(lab, worker):
        pytest.skip("the group inventory was never converged (see the test before)")
    assert ssh(lab, worker, "systemctl stop r1-vllm").returncode == 0

    found = drift_run(tmp_path)
    print(found.stdout)
    assert found.returncode == 1, found.out[-6000:]
    group_row = drift_row(found.stdout, GROUP, "group", "DRIFT")
    assert group_row and f"{worker} (worker rank 1): r1-vllm.service is not running" in group_row, found.stdout
    assert drift_row(found.stdout, worker, "service", "DRIFT"), found.stdout
    drifted = [line for line in found.stdout.splitlines() if " DRIFT " in line]
    print(f"drift: {len(drifted)} row(s) DRIFT")

    single_started = started_at(lab, single)
    healed = converge(*SETTING, inventory=GROUP_INVENTORY, R1DEPLOY_REPORTS=str(tmp_path))
    assert healed.returncode == 0, healed.out[-8000:]
    report = rollout_report(tmp_path)
    print_phases(report)
    assert {r["node"]: r["outcome"] for r in report["nodes"]} == {head: "rolled out", worker: "rolled out"}
    assert started_at(lab, single) == single_started  # the single node never restarted
    assert router_workers(lab) == sorted([url(lab, head), url(lab, single)])

    again = drift_run(tmp_path)
    assert again.returncode == 0, again.out[-6000:]
    assert drift_row(again.stdout, GROUP, "group", "ok"), again.stdout
    print(f"drift after the converge: exit {again.returncode}, group {GROUP} ok")
    assert chats_answered(lab) == 6


def test_back_to_the_lab_inventory_with_zero_failed_requests(lab, members, request, tmp_path):
    head, worker, single = members
    if not later_fleet_users(request):
        pytest.skip("no later lab module uses the fleet: the session's teardown removes it")
    done, seen = under_load(lab, lambda: converge(R1DEPLOY_REPORTS=str(tmp_path)), **LOAD)
    assert done.returncode == 0, done.out[-8000:]
    print_phases(rollout_report(tmp_path))
    routed = router_workers(lab)
    print(f"router: {len(routed)} worker(s)")
    assert routed == node_urls(lab)
    assert "headless: true" not in ssh(lab, worker, CURRENT_YAML).stdout.splitlines()
    assert_no_user_saw_it(seen)
