"""Preflight: refuse a host before anything is installed when it cannot run what the spec asks."""

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.facts.server import LinuxDistribution
from r1deploy.roles._plan import host_plan
from r1deploy.roles._spec import host_spec
from r1deploy.roles.preflight.facts import FreeBytes

from r1deploy.planner.catalog import MODELS

SUPPORTED = {("Debian", 12), ("Ubuntu", 22), ("Ubuntu", 24)}


def _check_os() -> None:
    dist = host.get_fact(LinuxDistribution)
    name, major = dist.get("name"), dist.get("major")
    if (name, major) not in SUPPORTED:
        raise DeployError(f"{host.name}: {name} {dist.get('release_meta', {}).get('VERSION', major)} is not "
                          f"supported (Debian 12, Ubuntu 22.04, Ubuntu 24.04)")


def _check_disk(spec) -> None:
    # Known sizes of catalog models; the agent re-checks against the hub's own listing.
    entry = next((m for m in MODELS if m.repo_id == spec.model.repo_id), None)
    if entry is None:
        return
    need = entry.weight_bytes + int(spec.model.disk_margin_gib * 2**30)
    free = host.get_fact(FreeBytes, path=spec.model.root)
    if free < need:
        raise DeployError(f"{host.name}: {spec.model.root} has {free / 2**30:.1f} GiB free, "
                          f"{spec.model.repo_id} needs {need / 2**30:.1f} GiB (weights + margin)")


def _check_plan(spec) -> None:
    """Refuse an impossible spec with the planner's explanation, before any download."""
    plan = host_plan(spec)
    if plan is not None and not plan.fits:
        hints = "".join(f"\n  try: {s}" for s in plan.suggestions)
        raise DeployError(f"{host.name}: {spec.model.repo_id} does not fit this hardware:\n  "
                          + "\n  ".join(plan.reasons) + hints)


@deploy("Preflight")
def preflight() -> None:
    spec = host_spec()
    _check_os()
    if spec.fleet.role == "node":
        _check_disk(spec)
        _check_plan(spec)
