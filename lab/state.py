"""What `lab up` recorded (hosts, SSH key, lab services, the published model), for inventories."""

from __future__ import annotations

import json
import os
from pathlib import Path

_NAME = os.environ.get("R1LAB_NAME", "r1lab")
STATE = Path(os.environ.get("R1LAB_STATE") or
             ("/var/lib/r1deploy-lab" if _NAME == "r1lab" else f"/var/lib/r1deploy-lab-{_NAME}"))


def lab_info(required: bool = True) -> dict:
    path = STATE / "lab.json"
    if not path.exists():
        if not required:
            return {}
        raise SystemExit(f"the lab is not up ({path} missing): run `make lab` or `python -m lab up`")
    return json.loads(path.read_text())
