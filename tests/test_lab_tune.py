"""`r1deploy tune` end to end on the lab's CPU fleet (issue 22 item 6): converge, measure, restore.

NOT YET RUN: the lead runs it (`make test-full`, or pytest -m "lab and lab_full" tests/test_lab_tune.py).
Written by a helper who may not start labs; the pure parts are in tests/test_tune.py.

A short sweep on node1, measured on node1 itself (its engine key, the lab's edge keys file): the
baseline and two moves of max-num-batched-tokens (the CPU backend has no FP8 KV and no offload, so
those knobs are not swept). Each candidate is a real converge of node1 (drain, restart, warm-up,
smoke, rejoin); a candidate vLLM refuses fails its converge, the rollout puts node1 back, and the
sweep goes on. At the end node1 runs the release it had before, and the evidence is on disk.
"""

import json

import pytest
from labharness import LAB_INVENTORY, PY, host_ip, live_release, node_urls, router_workers, run

pytestmark = [pytest.mark.lab, pytest.mark.lab_full]  # four node turns and three capacity searches: ~10 min


@pytest.fixture(scope="module")
def lab(fleet):
    lab, first = fleet
    assert first.returncode == 0, first.out[-6000:]
    return lab


def test_tune_sweeps_node1_writes_the_winner_and_puts_node1_back(lab, tmp_path):
    before = live_release(lab, "node1")
    done = run(PY, "-m", "r1deploy", "tune", "--inventory", LAB_INVENTORY, "--limit", "node1",
               "--base-url", f"http://{host_ip(lab, 'node1')}:8000", "--api-key-file", lab["edge"]["vllm_key"],
               "--max-candidates", "4", "--workload", "random", "--input-len", "64", "--output-len", "16",
               "--start-rate", "0.5", "--max-points", "2", "--repeats", "3", "--window-s", "10", "--lead-s", "2",
               "--slo-ttft-ms", "30000", "--slo-tpot-ms", "3000", "--out", str(tmp_path), timeout=3600)
    assert done.returncode == 0, done.out[-8000:]
    out = tmp_path / "node1"
    body = json.loads((out / "tune.json").read_text())
    labels = [c["label"] for c in body["candidates"]]
    assert labels[:3] == ["baseline", "max-num-batched-tokens=1024", "max-num-batched-tokens=4096"]
    assert not any("kv" in x or "offload" in x for x in labels)  # not valid on the CPU backend
    assert body["results"]["baseline"]["capacity_req_s"] > 0
    for label in labels:  # measured, or a converge that failed and said so
        r = body["results"][label]
        assert r.get("capacity_req_s") is not None or "converge exited" in r.get("error", ""), (label, r)
    assert body["commands"][-1]["candidate"] == "restore" and "--data" not in body["commands"][-1]["converge"]
    assert (out / "tune.csv").read_text().startswith("candidate,changes,capacity_req_s")
    assert (out / "node1.group_data.py").read_text().startswith("# r1deploy tune on node1:")
    assert live_release(lab, "node1") == before  # never left changed without --apply
    assert router_workers(lab) == node_urls(lab)  # and back in rotation
