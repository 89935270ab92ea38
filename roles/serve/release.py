"""A node's releases: `current` and `previous` pointers, the history of what went live, and the
start of one release (checked, installed, flipped, then restarted). Shell over SSH via remote()."""

from __future__ import annotations

import shlex

from r1deploy.roles._rollout import remote

from r1deploy.fleet import rollout as core
from r1deploy.serving.render import CONFIG_DIR, SERVICE

CURRENT = f"{CONFIG_DIR}/current"
PREVIOUS = f"{CONFIG_DIR}/previous"
UNIT_PATH = f"/etc/systemd/system/{SERVICE}"
# Release ids in the order they went live (forward only: a rollback appends nothing), so a
# second rollback goes further back instead of returning to the release it left.
HISTORY = f"{CONFIG_DIR}/history"
RELEASE_FILES = ("vllm.yaml", "vllm.env", SERVICE)  # a release without all three cannot start


def release_check(release_dir: str) -> str:
    """Shell that fails (exit 3, saying so) unless the release has every file it starts from."""
    rel = shlex.quote(release_dir)
    present = " && ".join(f"test -f {rel}/{name}" for name in RELEASE_FILES)
    return (f"if ! {{ {present}; }}; then echo \"release {release_dir} is missing or incomplete (pruned?): "
            f"nothing was changed\"; exit 3; fi")


def activate(release_dir: str, target=None, remember: bool = True) -> float:
    """Install a release's unit, point current at it and start it; returns when it started.
    A missing or incomplete release fails before anything changes; nothing restarts unless the
    install and the flip succeeded. `remember`: a forward step, appended to the node's history (a
    rollback is not). `target`: another member of this host's serving group (default: this host)."""
    started = float(remote("date +%s", "clock", target=target))
    rel, release = shlex.quote(release_dir), shlex.quote(release_dir.rstrip("/").rsplit("/", 1)[-1])
    history = (f"{{ [ \"$(tail -n 1 {HISTORY} 2>/dev/null)\" = {release} ] || echo {release} >> {HISTORY}; }} && "
               if remember else "")
    remote(f"{release_check(release_dir)}; "
           f"install -m 644 {rel}/{SERVICE} {UNIT_PATH} && systemctl daemon-reload && "
           f"old=$(readlink -e {CURRENT} || true) && "
           f"ln -sfn {rel} {CURRENT}.next && mv -T {CURRENT}.next {CURRENT} && "
           f"if [ -n \"$old\" ] && [ \"$old\" != {rel} ]; then "
           f"ln -sfn \"$old\" {PREVIOUS}.next && mv -T {PREVIOUS}.next {PREVIOUS}; fi && {history}"
           f"{{ systemctl enable {SERVICE} >/dev/null 2>&1 || true; }} && systemctl restart {SERVICE}",
           "start", target=target)
    return started


def pointers(target=None) -> tuple[str | None, str | None]:
    """(current, previous) release ids as the node's pointers say (None where a pointer is missing)."""
    out = remote(f'echo "c=$(readlink {CURRENT})"; echo "p=$(readlink {PREVIOUS})"', "release pointers",
                 target=target)
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    name = lambda key: values.get(key, "").rstrip("/").rsplit("/", 1)[-1] or None  # noqa: E731
    return name("c"), name("p")


def before_in_history(release: str, away_from: str | None, target=None) -> str | None:
    """The release live before `release` by the node's history, if it is still complete there."""
    history = remote(f"cat {HISTORY} 2>/dev/null || true", "release history", target=target).splitlines()
    before = core.previous_in_history(history, release, away_from)
    return before if before and complete(before, target) else None


def complete(release: str, target=None) -> bool:
    """Whether a release's directory holds every file it starts from (a pruned one does not)."""
    return remote(f"( {release_check(f'{CONFIG_DIR}/releases/{release}')} ) >/dev/null && echo ok || echo missing",
                  "release check", target=target).strip() == "ok"


def keep_previous(rolled_back_to: str, prior_previous: str | None, target=None) -> None:
    """After a rollback, `previous` points where it did before the failed turn (never at the bad release)."""
    keep = (f"ln -sfn {CONFIG_DIR}/releases/{prior_previous} {PREVIOUS}.next && mv -T {PREVIOUS}.next {PREVIOUS}"
            if prior_previous and prior_previous != rolled_back_to else f"rm -f {PREVIOUS}")
    remote(keep, "previous pointer", target=target)
