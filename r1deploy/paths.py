"""Where the package's parts that are not Python modules of the core live. Installed (the wheel),
they sit inside the package: r1deploy/templates, r1deploy/deploys (setup.py maps them); in a
checkout they are the repository's own top-level folders beside it: templates/, deploy/."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def _inside_or_beside(installed: str, checkout: str) -> Path:
    inside = PACKAGE / installed
    return inside if inside.is_dir() else PACKAGE.parent / checkout


TEMPLATES = Path(os.environ.get("R1DEPLOY_TEMPLATES") or _inside_or_beside("templates", "templates"))
DEPLOYS = _inside_or_beside("deploys", "deploy")
EXAMPLES = _inside_or_beside("examples", "inventories")  # the example fleet `r1deploy init` copies


def run_dir() -> str:
    """Where pyinfra runs from: a checkout's root (its inventories import the lab beside it), else
    the operator's current directory (their own repository)."""
    return os.getcwd() if (PACKAGE / "deploys").is_dir() else str(PACKAGE.parent)


def deploy_file(name: str) -> Path:
    """The pyinfra entry file of one deploy (main, drift, rollback, ...), for `pyinfra INV FILE`."""
    return DEPLOYS / f"{name}.py"
