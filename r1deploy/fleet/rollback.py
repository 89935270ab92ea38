"""`r1deploy rollback INVENTORY`: every node back one release, rolling (runs deploy/rollback.py)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from r1deploy.paths import deploy_file

DEPLOY = deploy_file("rollback")


def _rollback(args) -> int:
    pyinfra = shutil.which("pyinfra", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not pyinfra:
        print("pyinfra is not installed next to r1deploy", file=sys.stderr)
        return 2
    if not DEPLOY.exists():
        print(f"{DEPLOY} is missing: reinstall r1deploy", file=sys.stderr)
        return 2
    argv = [pyinfra, "-y", os.path.abspath(args.inventory), str(DEPLOY), *(["--limit", args.limit] if args.limit else [])]
    # pyinfra resolves roles/ and group_data/ from the checkout, as for a converge.
    os.chdir(DEPLOY.parent.parent)
    os.execv(pyinfra, argv)
    return 0  # not reached


def register(sub) -> None:
    p = sub.add_parser("rollback", help="roll every node back one release, batch by batch, drained")
    p.add_argument("inventory", help="pyinfra inventory file, e.g. inventories/prod.py")
    p.add_argument("--limit", help="only these hosts or groups (pyinfra --limit)")
    p.set_defaults(func=_rollback)
