"""Deploys on hosts before or beside the fleet: bootstrap, GPU hosts only, the drift timer."""

import os

from pyinfra import host, inventory
from pyinfra.api import DeployError

from r1deploy.fleet.validate import validate_inventory


def bootstrap_hosts() -> None:
    """An operator account with its SSH key and sudo, key-only SSH, python3 (see bootstrap.py)."""
    from r1deploy.roles._spec import host_spec
    from r1deploy.roles.access import access

    spec = host_spec()
    if not spec.fleet.admin_pubkey_file:
        raise DeployError(f"{host.name}: set fleet_admin_pubkey_file (the operator's public key) to bootstrap")
    with open(os.path.expanduser(spec.fleet.admin_pubkey_file)) as f:
        access(spec.fleet.admin_user, f.read().strip())


def provision_gpu_hosts() -> None:
    """Preflight, then the gpu_host role (driver, NCCL, fabric manager, reboot, gate)."""
    from r1deploy.roles._spec import host_spec
    from r1deploy.roles.gpu_host import gpu_host
    from r1deploy.roles.preflight import preflight

    validate_inventory((h.name, h.data.dict()) for h in inventory)
    spec = host_spec()
    preflight()
    if spec.fleet.role == "node":
        gpu_host()


def install_drift_timer() -> None:
    """The drift check as a systemd timer + service on the ops host(s) (see drift_timer.py)."""
    from r1deploy.roles.drift_timer import drift_timer

    drift_timer()
