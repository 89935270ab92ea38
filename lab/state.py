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
