"""GPU hosts only: preflight, then the gpu_host role (driver, NCCL, fabric manager, reboot, gate).

    pyinfra INVENTORY deploy/gpu_hosts.py [--limit HOST]

For provisioning GPU servers ahead of the serving stages of deploy/main.py, and for the lab's
SIMULATED GPU hosts (tests/test_gpu_lab.py), which have no model to serve. Every host must be
a node with gpu_manage left on; the inventory is validated before any operation runs.
"""

from pyinfra import inventory

from r1deploy.fleet.validate import validate_inventory
from roles._spec import host_spec
from roles.gpu_host import gpu_host
from roles.preflight import preflight

validate_inventory((h.name, h.data.dict()) for h in inventory)

spec = host_spec()
preflight()
if spec.fleet.role == "node":
    gpu_host()
