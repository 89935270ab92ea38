"""What `lab up` recorded (hosts, SSH key, lab services, the published model), for inventories."""

from __future__ import annotations

import json
import os
from pathlib import Path

# Several labs can coexist (e.g. CI's and a developer's): R1LAB_NAME (and R1LAB_NET) tell them apart.
LAB = os.environ.get("R1LAB_NAME", "r1lab")
CACHE = Path(os.environ.get("R1LAB_CACHE", "/var/cache/r1deploy-lab"))  # shared by every lab
STATE = Path(os.environ.get("R1LAB_STATE") or
             ("/var/lib/r1deploy-lab" if LAB == "r1lab" else f"/var/lib/r1deploy-lab-{LAB}"))


def lab_info(required: bool = True) -> dict:
    path = STATE / "lab.json"
    if not path.exists():
        if not required:
            return {}
        raise SystemExit(f"the lab is not up ({path} missing): run `make lab` or `python -m lab up`")
    return json.loads(path.read_text())


def inventory_hosts(lab: dict, role: str) -> list[tuple[str, dict]]:
    """The lab's hosts of one role as pyinfra inventory entries (lab/inventories/lab.py, lab_group.py).

    As in production: a non-root login user with sudo, and host keys pinned in the lab's own
    known_hosts (written by `lab up` from the keys baked into the image)."""
    ssh = {
        "ssh_user": lab.get("login_user", "r1ops"),
        "_sudo": True,
        "ssh_key": lab["ssh_key"],
        "ssh_known_hosts_file": lab["known_hosts"],
        "ssh_strict_host_key_checking": "yes",
    }
    return [(h["name"], {"ssh_hostname": h["ip"], "vllm_host_ip": h["ip"], "fleet_role": role, **ssh})
            for h in lab["hosts"] if h["role"] == role]
