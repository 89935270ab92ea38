"""Bootstrap new hosts: an operator account with its SSH key and sudo, key-only SSH, python3.

    r1deploy hostkey --inventory NEW_HOSTS_INVENTORY      # pin each host's key (fingerprints shown)
    pyinfra NEW_HOSTS_INVENTORY deploy/bootstrap.py --data ssh_user=root

Run once per new host with whatever access it came with: root's key, or the cloud image's user
and its first password (`ssh_password` in the inventory, with `_sudo = True`). Afterwards the
fleet is managed as `fleet_admin_user` with the key in `fleet_admin_pubkey_file`, and sshd
refuses passwords. Idempotent: a second run changes nothing.
"""

import os

from pyinfra import host
from pyinfra.api import DeployError

from roles._spec import host_spec
from roles.access import access

spec = host_spec()
if not spec.fleet.admin_pubkey_file:
    raise DeployError(f"{host.name}: set fleet_admin_pubkey_file (the operator's public key) to bootstrap")
with open(os.path.expanduser(spec.fleet.admin_pubkey_file)) as f:
    access(spec.fleet.admin_user, f.read().strip())
