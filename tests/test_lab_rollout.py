"""Zero-downtime fleet changes on the lab: a bounded load loop through the gateway (OpenAI client)
runs while deploy/main.py changes the fleet; users must see no failed request and no cut stream.

One shared lab (3 nodes + gateway, tests/labharness.py). In order: a serving setting changes;
`r1deploy rollback` goes back; a release vLLM rejects fails on the canary and is rolled back;
a new model revision (a second commit on the lab hub) starts rolling out, pyinfra is SIGKILLed
while a node is drained, and the next converge finishes it; a last converge changes nothing.
The fleet ends on the lab inventory's spec when another lab module follows.
"""

import os
import signal
import subprocess
import time

import pytest
from labharness import (
    PY,
    PYINFRA,
    REPO,
    assert_no_user_saw_it,
    changed_ops,
    converge,
    later_fleet_users,
    live_release,
    node_names,
    node_urls,
    rollout_report,
    router_workers,
    run,
    ssh,
    started_at,
    under_load,
)

pytestmark = pytest.mark.lab  # in CI's `make test` (the lab's hosts each get an equal share of the
# CPU, lab/cpu.py, and run their engine in one process: a node's turn under load ~45 s, a 3-node
# rolling change ~2.5 min; bench/results/ci-time.md)
# Load: tests/labharness.py under_load (RATE requests per second through the edge, mixed).


@pytest.fixture(scope="module")
def lab(fleet):
    lab, first = fleet
    assert first.returncode == 0, first.out[-6000:]
    return lab


def assert_all_in_rotation(lab):
    assert router_workers(lab) == node_urls(lab)


# The releases the lab inventory renders (before the first change): where rollback must land.
INVENTORY_RELEASES: dict[str, str] = {}


def test_a_setting_change_rolls_through_the_fleet_with_zero_failed_requests(lab, tmp_path):
    before = {n: live_release(lab, n) for n in node_names(lab)}
    INVENTORY_RELEASES.update(before)
    done, seen = under_load(lab, lambda: converge("--data", "vllm_max_model_len=1024",
                                                  R1DEPLOY_REPORTS=str(tmp_path)))
    assert done.returncode == 0, done.out[-8000:]
    assert_no_user_saw_it(seen)
    report = rollout_report(tmp_path)
    assert report["stopped_by"] is None
    by_node = {r["node"]: r for r in report["nodes"]}
    assert sorted(by_node) == node_names(lab)
    for name, r in by_node.items():
        assert r["outcome"] == "rolled out", r
        phases = [p["phase"] for p in r["phases"]]
        assert phases == ["drain", "stop", "start", "healthy", "warm-up", "smoke", "rejoin"], (name, phases)
        assert live_release(lab, name) == r["release"] != before[name]
    assert sorted(r["batch"] for r in by_node.values()) == [1, 2, 3]  # one node at a time
    assert_all_in_rotation(lab)
    print("rollout phases:\n" + "\n".join(
        f"{r['node']} batch {r['batch']}: " + "  ".join(f"{p['phase']} {p['seconds']:.1f}s" for p in r["phases"])
        for r in report["nodes"]))


def test_rollback_returns_every_node_to_the_previous_release_with_zero_failed_requests(lab, tmp_path):
    before = {n: live_release(lab, n) for n in node_names(lab)}
    done, seen = under_load(lab, lambda: run(PY, "-m", "r1deploy", "rollback", "lab/inventories/lab.py",
                                             timeout=2400, R1DEPLOY_REPORTS=str(tmp_path)))
    assert done.returncode == 0, done.out[-8000:]
    assert_no_user_saw_it(seen)
    for r in rollout_report(tmp_path)["nodes"]:
        assert r["outcome"] == "rolled out" and r["previous"] == before[r["node"]], r
        assert live_release(lab, r["node"]) == r["release"] != before[r["node"]]
    assert_all_in_rotation(lab)
    # Back where the inventory says (the last test proves a converge then changes nothing).
    if INVENTORY_RELEASES:
        assert {n: live_release(lab, n) for n in node_names(lab)} == INVENTORY_RELEASES


def test_a_release_vllm_rejects_fails_on_the_canary_and_rolls_back(lab, tmp_path):
    nodes = node_names(lab)
    canary, others = nodes[0], nodes[1:]
    before = {n: (live_release(lab, n), started_at(lab, n)) for n in nodes}
    done, seen = under_load(lab, lambda: converge(
        "--data", 'vllm_extra_args={"enforce-eager": true, "no-such-engine-flag": true}', R1DEPLOY_REPORTS=str(tmp_path)))
    assert done.returncode != 0, done.out[-6000:]
    assert_no_user_saw_it(seen)
    assert f"failed on {canary}" in done.out and "no-such-engine-flag" in done.out, done.out[-6000:]
    assert "vLLM said:" in done.out, done.out[-6000:]
    report = rollout_report(tmp_path)
    by_node = {r["node"]: r for r in report["nodes"]}
    assert report["stopped_by"] == canary and by_node[canary]["outcome"] == "rolled back", report
    assert live_release(lab, canary) == before[canary][0]  # serving the old release again
    for name in others:  # never restarted
        assert (live_release(lab, name), started_at(lab, name)) == before[name], name
        assert by_node.get(name, {}).get("outcome", "held") == "held"
    assert_all_in_rotation(lab)


def test_a_controller_killed_mid_rollout_leaves_the_fleet_serving_and_the_next_converge_finishes(lab, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "R1DEPLOY_REPORTS": str(tmp_path)}

    nxt = lab["model"]["revision_next"]
    revision = ["--data", f"model_revision={nxt}"]

    def kill_while_drained():
        # A new model revision (a second commit on the lab hub): every node has a turn.
        proc = subprocess.Popen([PYINFRA, "-y", "lab/inventories/lab.py", "deploy/main.py", *revision], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 1500
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                if len(router_workers(lab)) < len(node_names(lab)):  # a node is out of rotation
                    time.sleep(1)
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return True
                time.sleep(0.5)
            return False
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    killed, seen = under_load(lab, kill_while_drained)
    assert killed, "no node was ever drained"
    assert_no_user_saw_it(seen)
    assert len(router_workers(lab)) < len(node_names(lab))  # left drained by the kill

    done, seen = under_load(lab, lambda: converge(*revision, R1DEPLOY_REPORTS=str(tmp_path)))
    assert done.returncode == 0, done.out[-8000:]
    assert_no_user_saw_it(seen)
    assert_all_in_rotation(lab)
    for name in node_names(lab):  # each serves the new commit's directory
        assert f"/{nxt}" in ssh(lab, name, "cat /etc/r1deploy/current/vllm.yaml").stdout, name


def test_a_converged_fleet_converges_to_no_change_and_goes_back_to_the_inventory(lab, request):
    nxt = lab["model"]["revision_next"]
    before = {n: started_at(lab, n) for n in node_names(lab)}
    again = converge("--data", f"model_revision={nxt}")
    assert again.returncode == 0, again.out[-6000:]
    assert changed_ops(again.out) == 0, again.out[-6000:]
    assert {n: started_at(lab, n) for n in node_names(lab)} == before  # nothing restarted
    assert_all_in_rotation(lab)
    # Leave the shared fleet as the inventory says for the lab modules after this one (one more
    # rolling update, no load needed); when none follows, the session's teardown removes it anyway.
    if later_fleet_users(request):
        back = converge()
        assert back.returncode == 0, back.out[-6000:]
