"""Bridge from pyinfra's host data to the validated spec (the only place roles read data from)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api.exceptions import DeployError

from r1deploy.spec import Spec, SpecError, spec_from_host_data


def host_spec(target=None) -> Spec:
    """The validated spec of the current (or given) host; DeployError names host and field."""
    target = target or host
    try:
        return spec_from_host_data(target.name, target.data.dict())
    except SpecError as exc:
        raise DeployError(str(exc)) from None
