"""`python -m r1deploy.weights pull|plan|verify|status`: one JSON line on stdout, exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import Any

from r1deploy.guard import read_secret_file
from r1deploy.weights import __doc__ as weights_doc
from r1deploy.weights.errors import WeightsError
from r1deploy.weights.manifest import status, verify
from r1deploy.weights.pull import plan, pull


def _scrub(text: str, secrets: Iterable[str | None]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def _source(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(endpoint, token) of the pull: the hub with its token, or a LAN seed with the fleet's seed token.

    A seed pull never carries the hub token: a seed is plain HTTP on the LAN, and it only needs
    to know the node belongs to the fleet.
    """
    if args.seed:
        if args.token_file:
            raise WeightsError("--token-file is the hub token and is never sent to a seed; "
                               "give the seed's token with --seed-token-file")
        endpoint, token_file, what = args.seed, args.seed_token_file, "seed token"
    else:
        if args.seed_token_file:
            raise WeightsError("--seed-token-file needs --seed URL")
        endpoint, token_file, what = args.endpoint, args.token_file, "hub token"
    token = read_secret_file(token_file, what) if token_file else None
    args.secrets.append(token)
    return endpoint, token


def _cmd_pull(args: argparse.Namespace) -> dict[str, Any]:
    endpoint, token = _source(args)
    return pull(args.repo, args.revision, args.root, endpoint, token=token, allow=args.allow,
                ignore=args.ignore, extra_bytes=args.extra_bytes, margin_gib=args.margin_gib,
                workers=args.workers)


def _cmd_plan(args: argparse.Namespace) -> dict[str, Any]:
    endpoint, token = _source(args)
    return plan(args.repo, args.revision, args.root, endpoint, token=token, allow=args.allow,
                ignore=args.ignore, extra_bytes=args.extra_bytes, margin_gib=args.margin_gib)


def _cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    return verify(args.dir, full=args.full)


def _cmd_status(args: argparse.Namespace) -> dict[str, Any]:
    return status(args.root, args.repo)


def _repo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", required=True, help="org/name")
    p.add_argument("--revision", required=True, help="40-hex commit (a branch is resolved once)")
    p.add_argument("--root", required=True, help="models root, e.g. /srv/models")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--endpoint", help="Hub or mirror URL (default: HF_ENDPOINT or the Hub)")
    source.add_argument("--seed", metavar="URL", help="a LAN seed's mirror (r1-mirror.service) instead of the hub")
    p.add_argument("--token-file", help="file holding the hub token (mode 0600); never sent to a --seed")
    p.add_argument("--seed-token-file", help="file holding the fleet's seed token (mode 0600), for --seed")
    p.add_argument("--allow", nargs="*", default=None, metavar="PAT", help="only files matching these globs")
    p.add_argument("--ignore", nargs="*", default=None, metavar="PAT", help="skip files matching these globs")
    p.add_argument("--extra-bytes", type=int, default=0, help="more disk needed later (e.g. quantized output)")
    p.add_argument("--margin-gib", type=float, default=10.0, help="free space to leave on the filesystem")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m r1deploy.weights", description=weights_doc.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("pull", help="download, verify and publish a repo revision")
    _repo_args(pl)
    pl.add_argument("--workers", type=int, default=4, help="files downloaded in parallel")
    pl.set_defaults(func=_cmd_pull)
    pn = sub.add_parser("plan", help="JSON: what a pull would fetch and whether it fits on disk (writes nothing)")
    _repo_args(pn)
    pn.set_defaults(func=_cmd_plan)
    v = sub.add_parser("verify", help="check a pulled directory against its manifest")
    v.add_argument("--dir", required=True)
    v.add_argument("--full", action="store_true", help="rehash every file instead of size+mtime")
    v.set_defaults(func=_cmd_verify)
    s = sub.add_parser("status", help="JSON: what current points to and whether it checks out")
    s.add_argument("--root", required=True)
    s.add_argument("--repo", required=True)
    s.set_defaults(func=_cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.secrets = []
    try:
        result = args.func(args)
    except Exception as exc:  # one JSON line for the caller, one readable line for the operator
        message = _scrub(f"{type(exc).__name__}: {exc}", args.secrets)
        print(f"error: {message}", file=sys.stderr)
        print(json.dumps({"changed": False, "error": message}))
        return getattr(exc, "exit_code", 1)
    print(json.dumps(result, sort_keys=True))
    if args.command == "verify" and not result["ok"]:
        return 1
    return 0
