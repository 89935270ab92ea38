"""Load a pyinfra inventory file and validate it as a fleet, without connecting anywhere."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
import warnings
from typing import Any

from r1deploy.fleet.validate import HostEntry, validate_fleet
from r1deploy.spec import Spec, SpecError


class InventoryFileError(Exception):
    """A group data or inventory file that does not execute: file and line first, then the error."""


_validating: set[str] = set()


@contextlib.contextmanager
def loading_offline(inventory_path: str):
    """While r1deploy itself loads an inventory (to list or validate its hosts), the inventory's own
    validate_before_connecting call stands down: the loader decides what to check."""
    path = os.path.abspath(inventory_path)
    _validating.add(path)
    try:
        yield
    finally:
        _validating.discard(path)


def _where(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _file_error(exc: BaseException, filename: str | None = None) -> InventoryFileError:
    """pyinfra wraps what an inventory file raises in UnexpectedExternalError, a click exception
    that never sets its message (str() of it fails); say where it happened and what it was."""
    if isinstance(exc, SyntaxError):
        return InventoryFileError(f"{_where(exc.filename or '?')}:{exc.lineno}: SyntaxError: {exc.msg}")
    frames = [f for f in traceback.extract_tb(getattr(exc, "_traceback", None) or exc.__traceback__)
              if filename is None or f.filename == filename]
    where = f"{_where(frames[-1].filename)}:{frames[-1].lineno}" if frames else _where(filename or "?")
    return InventoryFileError(f"{where}: {type(exc).__name__}: {exc}")


def cli_overrides() -> dict[str, Any]:
    """What pyinfra's command line (--data, --user, --key, --port, ...) lays over the inventory: the
    run connects with these, so the validation inside the inventory file must see them too (the
    drift timer passes its own key and known_hosts this way)."""
    try:
        import click
        from pyinfra_cli.cli import _set_override_data

        params = click.get_current_context().params
    except (RuntimeError, ImportError):  # not inside pyinfra's CLI
        return {}
    return _set_override_data(params.get("data") or (), params.get("ssh_user"), params.get("ssh_key"),
                              params.get("ssh_key_password"), params.get("ssh_port"), params.get("ssh_password"))


@contextlib.contextmanager
def offline_inventory(inventory_path: str, cwd: str | None = None, override_data: dict[str, Any] | None = None):
    """The pyinfra Inventory of a file, loaded as pyinfra would (cwd on sys.path, so inventories can
    import lab/ and r1deploy/) inside an offline state, so nothing connects; the inventory's own
    validate_before_connecting stands down (the caller decides what to check), and a file that does
    not execute is an InventoryFileError naming file and line."""
    with warnings.catch_warnings():  # pyinfra_cli monkey-patches ssl late; harmless for loading
        warnings.filterwarnings("ignore", message="Monkey-patching ssl")
        from pyinfra.api import State
        from pyinfra.context import ctx_state
        from pyinfra_cli.exceptions import UnexpectedExternalError
        from pyinfra_cli.inventory import make_inventory

    cwd = cwd or os.getcwd()
    # pyinfra reads any other string as host names, a module or a DNS name, and a missing file
    # became an inventory of no hosts that "validated" (issue 21 item 11): r1deploy takes files only.
    if not os.path.isfile(inventory_path):
        raise InventoryFileError(f"{inventory_path}: no such inventory file")
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        with loading_offline(inventory_path), ctx_state.use(State(check_for_changes=False)):
            yield make_inventory(inventory_path, override_data=override_data, cwd=cwd)
    except (UnexpectedExternalError, SyntaxError) as exc:
        raise inventory_file_error(exc) from None


def load_entries(inventory_path: str, cwd: str | None = None,
                 override_data: dict[str, Any] | None = None) -> list[HostEntry]:
    """Every host with its merged data (host > groups > all, exactly as pyinfra sees it), its own
    data and each of its groups' data."""
    with offline_inventory(inventory_path, cwd, override_data) as inventory:
        if not len(inventory):  # nothing checked is never "ok"
            raise InventoryFileError(f"{_where(inventory_path)}: no hosts in this inventory")
        override = inventory.get_override_data()
        # The group named after the inventory file comes last, so its data wins over the
        # other groups' by construction (the lab's overrides the shared gateways.py); "all"
        # comes first. Only the other groups can disagree without a winner one can see.
        ranked = {"all", os.path.splitext(os.path.basename(inventory_path))[0]}
        return [HostEntry(host.name, host.data.dict(), {**inventory.get_host_data(host.name), **override},
                          {g: inventory.get_group_data(g) for g in host.groups if g not in ranked})
                for host in inventory]


def inventory_file_error(exc: BaseException) -> InventoryFileError:
    """Where an inventory load went wrong, from what pyinfra_cli raised (UnexpectedExternalError
    wraps the file's own exception) or a SyntaxError."""
    inner = getattr(exc, "exception", None)
    if isinstance(inner, BaseException):
        return _file_error(inner, getattr(exc, "filename", None))
    return _file_error(exc)


def load_host_data(inventory_path: str, cwd: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    return [(e.name, dict(e.data)) for e in load_entries(inventory_path, cwd)]


def validate_before_connecting(inventory_file: str) -> None:
    """Call at the end of an inventory file. pyinfra connects to every host before it runs a
    deploy file; this validates the whole fleet while the inventory loads (secrets included), so
    a bad inventory stops the run before any connection is made."""
    if os.path.abspath(inventory_file) in _validating:  # r1deploy's own load: it validates itself
        return
    try:
        validate_fleet(load_entries(inventory_file, override_data=cli_overrides()))
    except (SpecError, InventoryFileError) as exc:
        import pyinfra

        if not getattr(pyinfra, "is_cli", False):
            raise
        # Under pyinfra's CLI an exception here becomes a traceback around an unprintable
        # wrapper: print the problems alone, and stop before pyinfra connects.
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None


def load_specs(inventory_path: str, cwd: str | None = None, check_secrets: bool = False) -> dict[str, Spec]:
    return validate_fleet(load_entries(inventory_path, cwd), check_secrets=check_secrets)


def _check(args: argparse.Namespace) -> int:
    try:
        specs = load_specs(args.inventory, check_secrets=not args.no_secrets)
    except (SpecError, InventoryFileError) as exc:
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
    p.add_argument("--no-secrets", action="store_true",
                   help="skip resolving secret references (model_hub_token_env/_file, vllm_api_key_env)")
    p.set_defaults(func=_check)
