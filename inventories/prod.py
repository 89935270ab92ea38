"""An example production fleet (not reachable from here; `r1deploy check inventories/prod.py`
validates it and `r1deploy plan --inventory inventories/prod.py` plans it).

Host names are placeholders (.example): put your own. DeepSeek-R1 (671B, FP8) on one 8×H200 HGX
node and two serving groups, behind gateway-01; two 8×H100 nodes that serve R1-Distill-Llama-70B,
behind gateway-02. Per-host data overrides group data (group_data/prod.py, then group_data/all.py).
Secrets the controller resolves (check without --no-secrets wants them): $HF_TOKEN, $R1_API_KEY,
$R1_CLIENT_KEY_CHAT_APP, the client key file and each gateway's TLS key (0600) named below.
"""

# Log in as the operator account deploy/bootstrap.py made (fleet_admin_user), with sudo. Host keys:
# strict checking against the known_hosts file in group_data/prod.py, pinned with `r1deploy hostkey`.
_ssh = {"ssh_user": "r1ops", "_sudo": True}

h200_nodes = [
    ("gpu-h200-01", {"ssh_hostname": "gpu-h200-01.r1.example", "vllm_host_ip": "10.20.0.11", **_ssh}),
]

h100_nodes = [
    ("gpu-h100-01", {"ssh_hostname": "gpu-h100-01.r1.example", "vllm_host_ip": "10.20.0.21", **_ssh}),
    ("gpu-h100-02", {"ssh_hostname": "gpu-h100-02.r1.example", "vllm_host_ip": "10.20.0.22", **_ssh}),
]

# Serving groups: full R1 over two nodes that together serve one replica (r1deploy/fleet/groups.py).
# Every member names its group and head; plan_nodes is the group's size (host data: the prod
# group sets plan_nodes = 1). Members need vllm_host_ip: vLLM's internal ports bind to it.
_group = {"plan_nodes": 2, **_ssh}

# R1 on 2×8×H100: the planner chooses TP8 × PP2, launched as vLLM's multi-node mode.
h100_r1_group = [
    ("gpu-h100-11", {"ssh_hostname": "gpu-h100-11.r1.example", "vllm_host_ip": "10.20.0.31",
                     "fleet_group": "r1-h100-a", "fleet_group_head": "gpu-h100-11", **_group}),
    ("gpu-h100-12", {"ssh_hostname": "gpu-h100-12.r1.example", "vllm_host_ip": "10.20.0.32",
                     "fleet_group": "r1-h100-a", "fleet_group_head": "gpu-h100-11", **_group}),
]

# R1 on 2×8×H200: DP16 + expert parallel over both nodes (vLLM's DeepSeek recipe), launched as
# vLLM's multi-node data parallel.
h200_r1_group = [
    ("gpu-h200-11", {"ssh_hostname": "gpu-h200-11.r1.example", "vllm_host_ip": "10.20.0.41",
                     "fleet_group": "r1-h200-a", "fleet_group_head": "gpu-h200-11", **_group}),
    ("gpu-h200-12", {"ssh_hostname": "gpu-h200-12.r1.example", "vllm_host_ip": "10.20.0.42",
                     "fleet_group": "r1-h200-a", "fleet_group_head": "gpu-h200-11", **_group}),
]


def _tls(name: str) -> dict:
    """A gateway's certificate for its public name (PEM files on the controller; the key 0600)."""
    return {"gateway_tls_cert_file": f"~/.config/r1deploy/tls/{name}.crt",
            "gateway_tls_key_file": f"~/.config/r1deploy/tls/{name}.key"}


# One gateway per model, each on a machine of its own. R1's names its replicas (the serving
# groups' heads); the distill's routes to every node of its model.
gateways = [
    ("gateway-01", {"ssh_hostname": "gateway-01.r1.example", "fleet_role": "gateway", "fleet_host_ip": "10.20.0.1",
                    "gateway_workers": ["http://10.20.0.11:8000", "http://10.20.0.31:8000",
                                        "http://10.20.0.41:8000"], **_tls("gateway-01.r1.example"), **_ssh}),
]
distill_gateways = [
    ("gateway-02", {"ssh_hostname": "gateway-02.r1.example", "fleet_role": "gateway", "fleet_host_ip": "10.20.0.2",
                    **_tls("gateway-02.r1.example"), **_ssh}),
]

# A bad inventory stops here, naming host and field, before pyinfra connects anywhere.
from r1deploy.fleet.inventory import validate_before_connecting  # noqa: E402

validate_before_connecting(__file__)
