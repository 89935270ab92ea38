"""Bridge from pyinfra's host data to the validated spec (the only place roles read data from)."""

from __future__ import annotations

from functools import cache

from pyinfra import host
from pyinfra.api.exceptions import DeployError

from r1deploy.spec import Spec, SpecError, spec_from_host_data


@cache
def _spec_for(name: str, frozen_items: tuple) -> Spec:
    return spec_from_host_data(name, dict(frozen_items))


def host_spec(target=None) -> Spec:
    """The validated spec of the current (or given) host; DeployError names host and field."""
    target = target or host
    data = target.data.dict()
    try:
        return _spec_for(target.name, tuple(sorted(data.items(), key=lambda kv: kv[0], reverse=False)))
    except TypeError:  # unhashable data values: validate without the cache
        return spec_from_host_data(target.name, data)
    except SpecError as exc:
        raise DeployError(str(exc)) from None
