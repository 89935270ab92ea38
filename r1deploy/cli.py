"""`r1deploy` command line: one subcommand per module, each module exposing register(subparsers)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines register(subparsers) adding its subcommand(s) with set_defaults(func=...).
COMMANDS = [
    "r1deploy.fleet.inventory",
    "r1deploy.mirror",
    "r1deploy.commands.render",
    "r1deploy.serving.smoke",
    "r1deploy.drift.runs",
    "r1deploy.gpu.gate",
    "r1deploy.commands.plan",
    "r1deploy.fleet.rollback",
    "r1deploy.fleet.hostkeys",
    "r1deploy.commands.dashboard",
    "r1deploy.commands.bench",
    "r1deploy.commands.tune",
    "r1deploy.commands.init",
    "r1deploy.commands.docs",
]


def build_parser() -> argparse.ArgumentParser:
    from r1deploy import __version__

    parser = argparse.ArgumentParser(prog="r1deploy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"r1deploy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from r1deploy.fleet.inventory import InventoryFileError
    from r1deploy.spec import SpecError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (SpecError, InventoryFileError) as exc:  # a bad --inventory: its problems, no traceback
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
