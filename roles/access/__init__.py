"""Access: the operator account (its key, passwordless sudo) and key-only SSH that other sshd
drop-ins cannot undo (deploy/bootstrap.py runs it once per new host)."""

import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd
from r1deploy.roles.access.facts import SshdEffective

# sshd takes the FIRST value it reads for a keyword and reads sshd_config.d/*.conf in lexical
# order, before the main file: 00- sorts ahead of cloud images' 50-cloud-init.conf and the like.
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-r1deploy.conf"
OLD_DROPIN = "/etc/ssh/sshd_config.d/90-r1deploy.conf"  # sorted last: lost to any other drop-in
SSHD_SETTINGS = {
    "PasswordAuthentication": "no",
    "KbdInteractiveAuthentication": "no",  # PAM's keyboard-interactive asks for the password too
    "PermitEmptyPasswords": "no",
    "PermitRootLogin": "prohibit-password",
    "PubkeyAuthentication": "yes",
}


# What `sshd -T` prints for a value (OpenSSH 9.2 still names prohibit-password by its old alias).
_EFFECTIVE = {"prohibit-password": ("prohibit-password", "without-password")}


def sshd_is_hardened(effective: dict | None) -> bool:
    return bool(effective) and all(effective.get(k.lower()) in _EFFECTIVE.get(v, (v,))
                                   for k, v in SSHD_SETTINGS.items())


def _verify_command() -> str:
    """sshd -t (a config sshd cannot read would lock everyone out), then every setting in sshd -T."""
    checks = []
    for keyword, value in SSHD_SETTINGS.items():
        line = f"{keyword.lower()} ({'|'.join(_EFFECTIVE.get(value, (value,)))})"
        complaint = f"sshd -T: {keyword} is not {value}: another sshd config sets it first"
        checks.append(f'echo "$out" | grep -qxE {shlex.quote(line)} || '
                      f"{{ echo {shlex.quote(complaint)} >&2; bad=1; }};")
    return f"PATH=$PATH:/usr/sbin; sshd -t || exit 1; out=$(sshd -T) || exit 1; bad=0; {' '.join(checks)} exit $bad"


def _operator(user: str, pubkey: str) -> None:
    server.user(name=f"Operator {user}", user=user, shell="/bin/bash", create_home=True, public_keys=[pubkey])
    files.put(name=f"sudo for {user}", src=StringIO(f"{user} ALL=(ALL) NOPASSWD:ALL\n"),
              dest=f"/etc/sudoers.d/90-r1deploy-{user}", mode="440", user="root", group="root")


def _key_only_ssh() -> None:
    conf = "# r1deploy: key-only SSH (sshd keeps the first value it reads; this file sorts first)\n"
    conf += "".join(f"{k} {v}\n" for k, v in SSHD_SETTINGS.items())
    hardened = sshd_is_hardened(host.get_fact(SshdEffective))
    dropin = files.put(name="SSH: keys only", src=StringIO(conf), dest=SSHD_DROPIN, mode="644",
                       user="root", group="root")
    old = files.file(name="SSH: no old drop-in", path=OLD_DROPIN, present=False)
    # Also runs when the file is already right but sshd -T disagrees (a drop-in added later).
    checked = server.shell(name="SSH: sshd -t and sshd -T say key-only", commands=[_verify_command()],
                           _if=lambda: dropin.did_change() or old.did_change() or not hardened)
    systemd.service(name="Reload sshd", service="ssh", reloaded=True, _if=checked.did_change)


@deploy("Access")
def access(admin_user: str, admin_pubkey: str) -> None:
    apt.packages(name="Bootstrap packages", packages=["python3", "sudo", "openssh-server"],
                 update=True, cache_time=24 * 3600)
    _operator(admin_user, admin_pubkey)
    _key_only_ssh()
