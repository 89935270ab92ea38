"""Bootstrap new hosts: an operator account with its SSH key and sudo, key-only SSH, python3.

    pyinfra NEW_HOSTS_INVENTORY deploy/bootstrap.py --data ssh_user=root

Run once per new host with whatever access it came with (root or the cloud image's user);
afterwards the fleet is managed as `fleet_admin_user` with the key in `fleet_admin_pubkey_file`.
Idempotent: a second run changes nothing.
"""

import os
from io import StringIO

from pyinfra import host
from pyinfra.api import DeployError
from pyinfra.operations import apt, files, server, systemd

from roles._spec import host_spec

spec = host_spec()
admin = spec.fleet.admin_user
if not spec.fleet.admin_pubkey_file:
    raise DeployError(f"{host.name}: set fleet_admin_pubkey_file (the operator's public key) to bootstrap")
with open(os.path.expanduser(spec.fleet.admin_pubkey_file)) as f:
    pubkey = f.read().strip()

apt.packages(name="Bootstrap packages", packages=["python3", "sudo", "openssh-server"],
             update=True, cache_time=24 * 3600)
server.user(name=f"Operator {admin}", user=admin, shell="/bin/bash", create_home=True,
            public_keys=[pubkey])
files.put(name=f"sudo for {admin}", src=StringIO(f"{admin} ALL=(ALL) NOPASSWD:ALL\n"),
          dest=f"/etc/sudoers.d/90-r1deploy-{admin}", mode="440", user="root", group="root")
sshd = files.put(name="SSH: keys only", src=StringIO("PasswordAuthentication no\nPermitRootLogin prohibit-password\n"),
                 dest="/etc/ssh/sshd_config.d/90-r1deploy.conf", mode="644")
systemd.service(name="Reload sshd", service="ssh", reloaded=True, _if=sshd.did_change)
