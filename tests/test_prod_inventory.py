"""inventories/prod.py, the example fleet, as one that serves real clients (issue 21 item 17).

It configured no client keys (every client a 401 while the deploy's own smoke passed), no TLS, no
gateway for the distill nodes, `gpu_memory_utilization = 0.95` and `trust_remote_code` fleet-wide
(the Llama distill needs neither), and `deepep_high_throughput` on the single-node R1 DP8 + EP
host, a backend vLLM documents for multi-node prefill. Each value now is what vLLM's recipe for
that model and layout uses (docs/serving-groups.md, *Expert-parallel kernels*)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_render import render_prod

from r1deploy.fleet.groups import is_group_worker
from r1deploy.fleet.inventory import load_entries
from r1deploy.fleet.rollout import fleet_address, gateways_of, node_url
from r1deploy.fleet.validate import validate_fleet

REPO = Path(__file__).resolve().parent.parent
LLAMA = "deepseek-ai/DeepSeek-R1-Distill-Llama-70B"


@pytest.fixture(scope="module")
def fleet():
    entries = load_entries(str(REPO / "inventories" / "prod.py"), cwd=str(REPO))
    specs = validate_fleet(entries, check_secrets=False)
    return specs, {e.name: fleet_address(e.name, e.data) for e in entries}


def test_issue_21_item_17_every_replica_is_behind_a_gateway_with_client_keys_and_tls(fleet):
    specs, addresses = fleet
    gateways = [(n, s) for n, s in specs.items() if s.fleet.role == "gateway"]
    nodes = [(n, s, addresses[n]) for n, s in specs.items() if s.fleet.role == "node"]
    for name, spec in gateways:
        assert spec.gateway.api_keys and all(ref.startswith(("env:", "file:")) for ref in spec.gateway.api_keys.values())
        assert spec.gateway.tls_cert_file and spec.gateway.tls_key_file, name
    replicas = [(n, s, a) for n, s, a in nodes if not is_group_worker(s, n)]
    assert {s.model.repo_id for _, s, _ in replicas} == {"deepseek-ai/DeepSeek-R1", LLAMA}
    for name, spec, address in replicas:
        assert gateways_of(node_url(spec, address), gateways, nodes), f"{name}: no gateway routes to it"


def test_issue_21_item_17_engine_settings_are_vllms_recipe_per_model_and_layout(fleet):
    specs, _ = fleet
    for name, spec in specs.items():
        if spec.fleet.role != "node":
            continue
        args = render_prod(specs, name).engine_args
        r1 = spec.model.repo_id == "deepseek-ai/DeepSeek-R1"
        # R1's recipe: trust-remote-code, 0.95 for a larger KV cache; the Llama distill: vLLM's defaults.
        assert args.get("trust-remote-code", False) is r1, name
        assert args["gpu-memory-utilization"] == (0.95 if r1 else 0.9), name
    # DP8 + EP on one node keeps vLLM's default all-to-all (the recipe's); DeepEP only across nodes,
    # and only where the operator built and listed it (item 13: no index has it): not in the example.
    assert "all2all-backend" not in render_prod(specs, "gpu-h200-01").engine_args
    assert "all2all-backend" not in render_prod(specs, "gpu-h200-11").engine_args
