"""An example P/D fleet (issue 25; not reachable from here): DeepSeek-R1 (671B, FP8) on 2×8×H200 as one
prefill node and one decode node of the P/D set "r1-pd", behind one gateway whose router runs in P/D
mode. `r1deploy check inventories/pd.py` validates it; `r1deploy plan --inventory inventories/pd.py`
shows the split the workload (plan_input_tokens / plan_output_tokens) asks for.

The nodes take R1's H200 settings from group_data/h200_nodes.py, the gateway its model from
group_data/gateways.py. Both sides of a set serve the same model, revision and vLLM (checked across
hosts before any connection, r1deploy/fleet/pd_sets.py); the KV cache moves over the nodes' RDMA NICs
(UCX_NET_DEVICES; UCX_TLS is the spec's RDMA default in prod).
"""

_ssh = {"ssh_user": "r1ops", "_sudo": True}
_pd = {"vllm_pd_set": "r1-pd", "fleet_admin_networks": ["10.20.9.0/24"],
       "vllm_ucx_net_devices": ",".join(f"mlx5_{i}:1" for i in range(8)), **_ssh}

h200_nodes = [
    ("pd-h200-prefill-01", {"ssh_hostname": "pd-h200-prefill-01.r1.example", "vllm_host_ip": "10.30.0.11",
                            "vllm_pd_role": "prefill", **_pd}),
    ("pd-h200-decode-01", {"ssh_hostname": "pd-h200-decode-01.r1.example", "vllm_host_ip": "10.30.0.21",
                           "vllm_pd_role": "decode", **_pd}),
]

gateways = [
    ("pd-gateway-01", {"ssh_hostname": "pd-gateway-01.r1.example", "fleet_role": "gateway",
                       "fleet_host_ip": "10.30.0.1", "fleet_admin_networks": ["10.20.9.0/24"], **_ssh}),
]

# A bad inventory stops here, naming host and field, before pyinfra connects anywhere.
from r1deploy.fleet.inventory import validate_before_connecting  # noqa: E402

validate_before_connecting(__file__)
