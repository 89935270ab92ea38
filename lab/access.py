"""How the controller gets into lab hosts: like production, a non-root login user with the lab
key and passwordless sudo, and host keys pinned in the lab's own known_hosts.

Root keeps the lab key too, as the lab's own break-glass (lab tests and lab tools use it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from r1deploy.fleet.hostkeys import HostKey

# deploy/bootstrap.py's default fleet_admin_user: the account a bootstrapped prod host has.
LOGIN_USER = "r1ops"


def _chroot(root: Path, *cmd: str) -> None:
    subprocess.run(["chroot", str(root), *cmd], check=True, stdout=subprocess.DEVNULL)


def fingerprint(key: str) -> str:
    return HostKey("", key).fingerprint


def host_keys(rootfs: Path) -> list[tuple[str, str]]:
    """(type, base64 key) of the host keys baked into the image: every lab host has them."""
    keys = []
    for pub in sorted((rootfs / "etc/ssh").glob("ssh_host_*_key.pub")):
        words = pub.read_text().split()
        keys.append((words[0], words[1]))
    return keys


def write_known_hosts(path: Path, rootfs: Path, ips: list[str]) -> Path:
    """The lab's own known_hosts, pinned from the image, so the lab connects as strictly as prod."""
    path.write_text("".join(f"{ip} {kind} {key}\n" for ip in ips for kind, key in host_keys(rootfs)))
    path.chmod(0o600)
    return path


def add_login_user(merged: Path, hostname: str, pubkey: str) -> None:
    """The non-root login user with the lab key and passwordless sudo, added per host on its
    overlay (the cached rootfs stays as it is). Idempotent."""
    hosts = merged / "etc/hosts"
    if f" {hostname}\n" not in (hosts.read_text() if hosts.exists() else ""):
        with open(hosts, "a") as f:  # sudo resolves the host's own name
            f.write(f"127.0.1.1 {hostname}\n")
    if f"\n{LOGIN_USER}:" in "\n" + (merged / "etc/passwd").read_text():
        return
    _chroot(merged, "useradd", "--create-home", "--shell", "/bin/bash", "--user-group", LOGIN_USER)
    ssh_dir = merged / "home" / LOGIN_USER / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(pubkey)
    (ssh_dir / "authorized_keys").chmod(0o600)
    _chroot(merged, "chown", "-R", f"{LOGIN_USER}:{LOGIN_USER}", f"/home/{LOGIN_USER}/.ssh")
    sudoers = merged / "etc/sudoers.d" / f"90-r1lab-{LOGIN_USER}"
    sudoers.write_text(f"{LOGIN_USER} ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
