"""The local lab (`make lab`): serving nodes and a gateway, as `lab up` made them.

Groups: `nodes`, `gateways`, and `lab` (pyinfra names a group after this file), whose data is
in group_data/lab.py.
"""

from lab.state import lab_info

_lab = lab_info()
# As in production: a non-root login user with sudo, and host keys pinned in the lab's own
# known_hosts (written by `lab up` from the keys baked into the image).
_ssh = {
    "ssh_user": _lab.get("login_user", "r1ops"),
    "_sudo": True,
    "ssh_key": _lab["ssh_key"],
    "ssh_known_hosts_file": _lab["known_hosts"],
    "ssh_strict_host_key_checking": "yes",
}


def _hosts(role: str) -> list:
    chosen = [h for h in _lab["hosts"] if h["role"] == role]
    return [(h["name"], {"ssh_hostname": h["ip"], "vllm_host_ip": h["ip"], "fleet_role": role, **_ssh})
            for h in chosen]


nodes = _hosts("node")
gateways = _hosts("gateway")

# A bad inventory stops here, naming host and field, before pyinfra connects anywhere.
from r1deploy.inventory import validate_before_connecting  # noqa: E402

validate_before_connecting(__file__)
