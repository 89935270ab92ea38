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
    """{canonical name: version} installed in a virtualenv; {} when it does not exist yet.

    Read from each dist-info's METADATA (Name, Version), what `pip freeze` reports too, in one awk:
    `pip freeze` itself starts pip, ~2 s of CPU per venv per converge."""

    def command(self, venv):
        return ("awk 'FNR==1{n=\"\";d=0} d{next} {sub(/\\r$/,\"\")} /^Name: /&&n==\"\"{n=$2} "
                "/^Version: /{print n\"==\"$2; d=1}' "
                f"{venv}/lib/python3*/site-packages/*.dist-info/METADATA 2>/dev/null || true")

    def process(self, output):
        found = {}
        for line in output:
            name, _, version = line.partition("==")  # (some METADATA has CRLF line ends)
            if name.strip() and version.strip():
                found[canonical(name.strip())] = version.strip()
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
