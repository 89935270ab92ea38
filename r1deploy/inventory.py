"""Load a pyinfra inventory file and validate it against the spec, without connecting anywhere."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from r1deploy.spec import Spec, SpecError, validate_inventory


def load_host_data(inventory_path: str, cwd: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Host name and merged data (host > groups > all), exactly as pyinfra would see them."""
    from pyinfra.api import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    cwd = cwd or os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # as pyinfra does, so inventories can import lab/ and r1deploy/
    # pyinfra executes inventory files inside a state context; an offline one connects nowhere.
    with ctx_state.use(State(check_for_changes=False)):
        inventory = make_inventory(inventory_path, cwd=cwd)
        return [(host.name, host.data.dict()) for host in inventory]


_validating: set[str] = set()


def validate_before_connecting(inventory_file: str) -> None:
    """Call at the end of an inventory file. pyinfra connects to every host before it runs a
    deploy file; this validates every host with its group data while the inventory loads, so a
    bad inventory stops the run before any connection is made."""
    path = os.path.abspath(inventory_file)
    if path in _validating:  # the nested load below executes this inventory file again
        return
    _validating.add(path)
    try:
        load_specs(path)
    finally:
        _validating.discard(path)


def load_specs(inventory_path: str, cwd: str | None = None) -> dict[str, Spec]:
    from r1deploy.monitor import monitor_errors

    rows = load_host_data(inventory_path, cwd)
    specs = validate_inventory(rows)
    errors = monitor_errors(rows, specs)  # inventory-wide: which host runs Prometheus
    if errors:
        raise SpecError(errors)
    return specs


def _check(args: argparse.Namespace) -> int:
    try:
        specs = load_specs(args.inventory)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1
    for name, spec in specs.items():
        print(f"{name:24} {spec.fleet.role:8} {spec.model.repo_id}@{spec.model.revision[:12]} "
              f"{spec.install.vllm_package}=={spec.install.vllm_version} :{spec.vllm.port}")
    print(f"ok: {len(specs)} host(s) valid")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate an inventory against the spec without touching hosts")
    p.add_argument("inventory", help="pyinfra inventory file, e.g. inventories/prod.py")
    p.set_defaults(func=_check)
