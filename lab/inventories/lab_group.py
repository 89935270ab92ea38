"""The local lab with one serving group: node1 and node2 serve ONE replica of the lab's model with
tensor parallel 2 across the lab bridge (vLLM's multi-node mode: node1 the head, node2 headless),
node3 (and any further node) serves alone. The gateway routes to the group's head and the single
nodes (r1deploy.fleet.rollout.gateway_workers: a group worker serves no API).

    pyinfra -y lab/inventories/lab_group.py deploy/main.py     # tests/test_lab_group.py, and back:
    pyinfra -y lab/inventories/lab.py deploy/main.py

Groups: `nodes`, `gateways`, and `lab_group` (named after this file), whose data is
group_data/lab_group.py: the same as group_data/lab.py's.
"""

from lab.state import inventory_hosts, lab_info

_lab = lab_info()
# eth0: each lab host's end of its veth on the lab bridge (lab/labctl.py), where vllm_host_ip lives.
# Tensor parallel, not pipeline: vLLM 0.32's CPU build serves PP2 over the bridge one request at a
# time, but concurrent requests kill its engine (scheduler KeyError in update_from_output, a known
# vLLM bug with PP >= 2; bench/results/multinode/README.md). The launch is the same multi-node mode.
_GROUP = {"fleet_group": "lab-a", "plan_nodes": 2, "vllm_tensor_parallel_size": 2,
          "vllm_nccl_socket_ifname": "eth0"}


def _with_group(hosts: list) -> list:
    """The first two nodes as one group (the first is its head), the others single nodes."""
    if len(hosts) < 3:
        raise SystemExit(f"lab/inventories/lab_group.py needs a lab of 3 nodes or more (a group of two and a "
                         f"single node serving beside it), this one has {len(hosts)}: python -m lab up --nodes 3")
    head = hosts[0][0]
    return [(name, {**data, **_GROUP, "fleet_group_head": head}) for name, data in hosts[:2]] + hosts[2:]


nodes = _with_group(inventory_hosts(_lab, "node"))
gateways = inventory_hosts(_lab, "gateway")

# A bad inventory stops here, naming host and field, before pyinfra connects anywhere.
from r1deploy.fleet.inventory import validate_before_connecting  # noqa: E402

validate_before_connecting(__file__)
