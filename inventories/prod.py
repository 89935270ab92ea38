"""An example production fleet (not reachable from here; `r1deploy check inventories/prod.py`
validates it and `r1deploy plan --inventory inventories/prod.py` plans it).

Host names are placeholders (.example): put your own. DeepSeek-R1 (671B, FP8) on one 8×H200 HGX node, plus two 8×H100 nodes that serve
R1-Distill-Llama-70B, behind one gateway. Per-host data overrides group data
(group_data/prod.py, then group_data/all.py).
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

gateways = [
    ("gateway-01", {"ssh_hostname": "gateway-01.r1.example", "fleet_role": "gateway",
                    "gateway_workers": ["http://10.20.0.11:8000"], **_ssh}),
]

# A bad inventory stops here, naming host and field, before pyinfra connects anywhere.
from r1deploy.inventory import validate_before_connecting  # noqa: E402

validate_before_connecting(__file__)
