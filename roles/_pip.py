"""Pinned pip installs into a virtualenv, compared the way pip itself names things.

pyinfra's pip fact drops local versions (`torch==2.13.0+cpu`) and compares unnormalized names
(`huggingface-hub` vs `huggingface_hub`), which makes a converged venv look unconverged.
"""

import re
import shlex

from pyinfra import host
from pyinfra.api import FactBase, operation


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def split_pin(requirement: str) -> tuple[str, str | None]:
    name, _, version = requirement.partition("==")
    return canonical(name.strip()), (version.strip() or None)


def satisfies(installed: str | None, wanted: str | None) -> bool:
    """PEP 440's `==`: a pin without a local label matches any (`deep_ep==1.2.1` is `1.2.1+73b6ea4`,
    as wheels built from a commit are named)."""
    if installed is None or wanted is None:
        return installed == wanted
    return installed == wanted or ("+" not in wanted and installed.split("+", 1)[0] == wanted)


class VenvPackages(FactBase):
    """{canonical name: version} installed in a virtualenv; {} when it does not exist yet."""

    def command(self, venv):
        return f"if [ -x {venv}/bin/pip ]; then {venv}/bin/pip freeze --all --disable-pip-version-check; fi"

    def process(self, output):
        found = {}
        for line in output:
            if "==" in line:
                name, version = split_pin(line)
                found[name] = version
        return found


@operation()
def pinned(venv: str, requirements: list[str], source_args: str = "", present: bool = True):
    """Install exact pins (or remove packages) in `venv`; nothing to do when already so."""
    installed = host.get_fact(VenvPackages, venv=venv) or {}
    if present:
        missing = [r for r in requirements if not satisfies(installed.get(split_pin(r)[0]), split_pin(r)[1])]
        if missing:
            yield f"{venv}/bin/pip install --disable-pip-version-check {source_args} {shlex.join(missing)}"
    else:
        extra = [r for r in requirements if split_pin(r)[0] in installed]
        if extra:
            yield f"{venv}/bin/pip uninstall --yes {shlex.join(extra)}"
