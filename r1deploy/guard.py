"""What the host agent and the mirror refuse: unsafe paths from a listing, escaping symlinks, open token files.

A hub, a LAN seed or a hand-edited manifest names paths that become files on disk: each one is
checked as a string first (relative, no `..`, no control characters), and a destination is
checked again against the real filesystem (a symlink on the way must not lead out). Stdlib only:
both run on hosts.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path


class Refused(ValueError):
    """Input that would reach outside a root, or a secret file others can read."""


def path_problem(path: object) -> str | None:
    """Why `path` cannot be a file of a repo (relative, '/'-separated, plain components), or None."""
    if not isinstance(path, str) or not path:
        return "an empty path"
    if path.startswith("/"):
        return "an absolute path"
    if "" in path.split("/"):
        return "an empty component"
    return url_path_problem(path)


def url_path_problem(path: str) -> str | None:
    """Why a decoded request path cannot name anything under a root (empty components allowed), or None."""
    if any(unicodedata.category(c) == "Cc" for c in path):  # NUL, newlines, escapes
        return "a control character"
    if "\\" in path:
        return "a backslash"
    parts = path.split("/")
    if ".." in parts:
        return "a '..' component"
    if "." in parts:
        return "a '.' component"
    return None


def check_listing(paths: list[str], source: str) -> None:
    """Refuse a whole listing when any path is unsafe, naming the path and the source."""
    for path in paths:
        problem = path_problem(path)
        if problem:
            raise Refused(f"{source} lists {path!r}, which has {problem}; refusing the listing")


def within(base: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """The real path of `path` (every symlink followed) is `base` or below it."""
    real_base, real = os.path.realpath(base), os.path.realpath(path)
    return real == real_base or real.startswith(real_base.rstrip(os.sep) + os.sep)


def contained(base: Path, rel: str) -> Path:
    """base/rel for a checked repo path whose real location stays under base (else Refused)."""
    problem = path_problem(rel)
    if problem:
        raise Refused(f"{rel!r} has {problem}")
    target = base / rel
    if not within(base, target):
        raise Refused(f"{target} resolves to {os.path.realpath(target)}, outside {base}")
    return target


def read_secret_file(path: str | os.PathLike[str], what: str = "token") -> str:
    """A secret from a file only its owner can read (never argv or env)."""
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise Refused(f"{what} file {path} has mode {mode:o}; it must not be readable by group or others "
                      "(chmod 600)")
    secret = Path(path).read_text().strip()
    if not secret:
        raise Refused(f"{what} file {path} is empty")
    return secret
