"""Pin a new host's SSH key in the operator's known_hosts before anything connects to it.

    r1deploy hostkey --known-hosts ~/.ssh/r1-known_hosts gpu-h200-01.r1.example
    r1deploy hostkey --inventory inventories/prod.py        # every host, its own known_hosts file

Inventories connect with strict host-key checking (`ssh_strict_host_key_checking = "yes"`), so a
host whose key is not pinned is refused. This asks the host for its keys (ssh-keyscan), prints
their SHA256 fingerprints for the operator to compare with what the provider shows (console,
cloud-init output, the image), and appends them only after a yes. `--expect SHA256:...` compares
for you and pins only the key that matches; `--yes` pins without asking (scripted use, trust on
first use). A host already pinned with another key is refused: that is what a man in the middle
looks like.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

KEY_TYPES = "ed25519,ecdsa,rsa"


@dataclass(frozen=True)
class HostKey:
    type: str
    key: str  # base64, as in known_hosts

    @property
    def fingerprint(self) -> str:
        """As `ssh-keygen -lf` prints it: SHA256 of the key blob, base64 without padding."""
        digest = hashlib.sha256(base64.b64decode(self.key)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(host: str, port: int = 22) -> str:
    """The name ssh and paramiko look a host up by: `host`, or `[host]:port` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def _name_matches(field: str, name: str) -> bool:
    for pattern in field.split(","):
        if pattern.startswith("|1|"):  # HashKnownHosts: |1|base64(salt)|base64(hmac-sha1(salt, name))
            _, _, salt, digest = pattern.split("|", 3)
            mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
            if hmac.compare_digest(base64.b64encode(mac).decode(), digest):
                return True
        elif pattern == name:
            return True
    return False


def parse_lines(text: str) -> list[tuple[str, HostKey]]:
    """(names field, key) per known_hosts or ssh-keyscan line; comments and markers skipped."""
    entries = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or words[0].startswith(("#", "@")):
            continue
        entries.append((words[0], HostKey(words[1], words[2])))
    return entries


def pinned_keys(known_hosts: str, name: str) -> set[HostKey]:
    return {key for names, key in parse_lines(known_hosts) if _name_matches(names, name)}


@dataclass
class Decision:
    name: str
    pin: list[HostKey]  # what to append (empty: nothing)
    status: str  # "new", "pinned" (nothing to do), "changed", "mismatch", "unreachable"

    @property
    def ok(self) -> bool:
        return self.status in ("new", "pinned")


def decide(name: str, scanned: list[HostKey], known_hosts: str, expect: str | None = None) -> Decision:
    """What to do with a host's scanned keys, given the known_hosts text (pure)."""
    if not scanned:
        return Decision(name, [], "unreachable")
    known = pinned_keys(known_hosts, name)
    if known:
        return Decision(name, [], "pinned" if known & set(scanned) else "changed")
    if expect:
        matching = [k for k in scanned if k.fingerprint == expect]
        return Decision(name, matching, "new" if matching else "mismatch")
    return Decision(name, list(scanned), "new")


def keyscan(host: str, port: int = 22, timeout: int = 5) -> list[HostKey]:
    """The keys a host offers; [] when it cannot be reached."""
    try:
        done = subprocess.run(["ssh-keyscan", "-T", str(timeout), "-p", str(port), "-t", KEY_TYPES, host],
                              capture_output=True, text=True, timeout=timeout * 4, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [key for _, key in parse_lines(done.stdout)]


def append(path: Path, name: str, keys: list[HostKey]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        f.writelines(f"{name} {k.type} {k.key}\n" for k in keys)


def _split_target(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if sep and port.isdigit() and "]" not in port:
        return host.strip("[]"), int(port)
    return target.strip("[]"), 22


def targets_from_inventory(inventory: str) -> list[tuple[str, str, int, str | None]]:
    """(inventory name, address, port, its ssh_known_hosts_file) per host of a pyinfra inventory."""
    from r1deploy.fleet.inventory import load_host_data

    return [(name, data.get("ssh_hostname") or name, int(data.get("ssh_port") or 22), data.get("ssh_known_hosts_file"))
            for name, data in load_host_data(inventory)]


MESSAGES = {
    "pinned": "already pinned (the host offers the pinned key)",
    "changed": "REFUSED: known_hosts pins ANOTHER key for this host. If the host was reinstalled, "
               "remove the old entry (ssh-keygen -R NAME -f FILE) and pin again; otherwise someone may "
               "be in the middle",
    "mismatch": "REFUSED: no key the host offers has the expected fingerprint",
    "unreachable": "could not check: no host key came back (host down, wrong port, or no sshd)",
}


def _confirm(decision: Decision) -> bool:
    try:
        answer = input(f"  pin these keys for {decision.name}? Compare with the fingerprint your provider shows [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _run(args: argparse.Namespace) -> int:
    if args.inventory:
        targets = [(n, h, p, args.known_hosts or kh) for n, h, p, kh in targets_from_inventory(args.inventory)]
    else:
        targets = [(t, *_split_target(t), args.known_hosts) for t in args.hosts]
    if not targets:
        print("no hosts given", file=sys.stderr)
        return 2
    worst = 0
    for label, address, port, known_hosts in targets:
        if not known_hosts:
            print(f"{label}: no known_hosts file (set ssh_known_hosts_file or pass --known-hosts)", file=sys.stderr)
            worst = max(worst, 1)
            continue
        path = Path(os.path.expanduser(known_hosts))
        name = known_hosts_name(address, port)
        scanned = keyscan(address, port, args.timeout)
        decision = decide(name, scanned, path.read_text() if path.exists() else "", args.expect)
        print(f"{label} ({name}):")
        for key in scanned:
            print(f"  {key.type:22} {key.fingerprint}")
        if decision.status == "new":
            if args.expect or args.yes or _confirm(decision):
                append(path, name, decision.pin)
                print(f"  pinned {len(decision.pin)} key(s) in {path}")
            else:
                print("  not pinned (not confirmed)")
                worst = max(worst, 1)
        else:
            print(f"  {MESSAGES[decision.status]}")
            worst = max(worst, 0 if decision.ok else 2 if decision.status == "unreachable" else 1)
    return worst


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hostkey", help="pin new hosts' SSH keys in known_hosts (fingerprint confirmed first)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("hosts", nargs="*", metavar="HOST[:PORT]")
    p.add_argument("--inventory", help="pin every host of this pyinfra inventory (its ssh_known_hosts_file)")
    p.add_argument("--known-hosts", help="known_hosts file to pin in (overrides the inventory's)")
    p.add_argument("--expect", metavar="SHA256:...", help="the fingerprint the provider shows: pin only that key")
    p.add_argument("--yes", action="store_true", help="pin without asking (scripted use)")
    p.add_argument("--timeout", type=int, default=5)
    p.set_defaults(func=_run)
