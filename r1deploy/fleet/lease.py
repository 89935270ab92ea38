"""Issue 21 item 6: one converge at a time per gateway, a lease held for the run.

The lease is a directory on the gateway host made atomically (a rename of a filled temporary
directory onto a name that must not exist), holding who took it: controller host, user, pid,
when (the gateway's clock) and a token of the run. Another run waits up to
rollout_lock_wait_s for it, then refuses naming the holder. A lease is stale (taken over) when it
is older than rollout_lock_stale_s, or when its holder ran on this same controller and its
process is gone (a converge killed there). Pure: the role (roles/_lease.py) runs the commands.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

LEASE_DIR = "/var/lib/r1deploy/converge.lease"


@dataclass(frozen=True)
class Holder:
    controller: str
    user: str
    pid: int
    since: int  # epoch seconds, the gateway's clock
    token: str

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        try:
            return cls(values["controller"], values.get("user", "?"), int(values["pid"]), int(values["since"]),
                       values["token"])
        except (KeyError, ValueError):
            return None

    def describe(self, now: int) -> str:
        return (f"{self.user}@{self.controller} (pid {self.pid}) holds it since {max(0, now - self.since)}s "
                f"ago")


def acquire_command(controller: str, user: str, pid: int, token: str, path: str = LEASE_DIR) -> str:
    """Take the lease or print who holds it: 'TAKEN' or 'HELD\\n<holder file>\\nnow=<epoch>'.
    rename(2) of a non-empty directory onto an existing one fails, so exactly one run wins."""
    q = shlex.quote
    tmp = f"{path}.$$"
    owner = "\\n".join([f"controller={controller}", f"user={user}", f"pid={pid}", "since=%s", f"token={token}"])
    return (f"mkdir -p {q(path.rsplit('/', 1)[0])} && rm -rf {tmp} && mkdir -m 700 {tmp} && "
            f"printf {q(owner + chr(92) + 'n')} \"$(date +%s)\" > {tmp}/holder && "
            f"if mv -T {tmp} {q(path)} 2>/dev/null; then echo TAKEN; else rm -rf {tmp}; echo HELD; "
            f"cat {q(path)}/holder 2>/dev/null; echo now=$(date +%s); fi")


def release_command(token: str, path: str = LEASE_DIR) -> str:
    """Remove the lease only if it is still this run's."""
    q = shlex.quote
    return (f"if grep -qx {q('token=' + token)} {q(path)}/holder 2>/dev/null; then rm -rf {q(path)}; fi; true")


def take_over_command(stale_token: str, path: str = LEASE_DIR) -> str:
    """Move a stale lease aside, only if it is still the stale one (another run may have taken it)."""
    q = shlex.quote
    return (f"if grep -qx {q('token=' + stale_token)} {q(path)}/holder 2>/dev/null; then "
            f"mv -T {q(path)} {q(path)}.stale.$$ && rm -rf {q(path)}.stale.$$; fi; true")


def parse_answer(out: str) -> tuple[bool, Holder | None, int]:
    """(taken, holder if held, the gateway's clock)."""
    lines = out.strip().splitlines()
    if lines and lines[0].strip() == "TAKEN":
        return True, None, 0
    now = next((int(v) for k, _, v in (ln.partition("=") for ln in lines) if k == "now" and v.isdigit()), 0)
    return False, Holder.parse("\n".join(lines[1:])), now


def is_stale(holder: Holder | None, now: int, stale_s: int, controller: str, alive) -> bool:
    """A lease nobody can be holding any more: unreadable, too old, or its holder's process on
    this very controller is gone (`alive(pid)` answers that)."""
    if holder is None:
        return True
    if now - holder.since > stale_s:
        return True
    return holder.controller == controller and not alive(holder.pid)


def refusal(gateway: str, holder: Holder | None, now: int, waited_s: int, path: str = LEASE_DIR) -> str:
    who = holder.describe(now) if holder else "another run holds it"
    return (f"{gateway}: another converge holds the gateway's lease {path}: {who}; waited {waited_s}s "
            f"(rollout_lock_wait_s). Run again when it is done; if that run is dead, remove {path} on {gateway}")
