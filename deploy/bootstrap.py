"""Bootstrap new hosts: an operator account with its SSH key and sudo, key-only SSH, python3.

    r1deploy hostkey --inventory NEW_HOSTS_INVENTORY      # pin each host's key (fingerprints shown)
    pyinfra NEW_HOSTS_INVENTORY deploy/bootstrap.py --data ssh_user=root

Run once per new host with whatever access it came with: root's key, or the cloud image's user
and its first password (`ssh_password` in the inventory, with `_sudo = True`). Afterwards the
fleet is managed as `fleet_admin_user` with the key in `fleet_admin_pubkey_file`, and sshd
refuses passwords. Idempotent: a second run changes nothing.
"""

from r1deploy.deploys import bootstrap_hosts

bootstrap_hosts()
