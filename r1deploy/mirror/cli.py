"""`r1deploy mirror serve|publish` (also `python -m r1deploy.mirror`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from r1deploy.guard import Refused, read_secret_file
from r1deploy.mirror.index import HEX40, PULL_MANIFEST
from r1deploy.mirror.publish import publish, repo_path
from r1deploy.mirror.server import serve


def _read_token(path: str | None, what: str) -> str | None:
    """A token from a 0600 file (never argv); a readable or empty file stops the mirror before it binds."""
    try:
        return read_secret_file(path, what) if path else None
    except (Refused, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None


def _pulled(specs: list[str]) -> dict[str, Path]:
    out = {}
    for spec in specs:
        repo_id, sep, path = spec.partition("=")
        repo_path(Path("/"), repo_id)  # validates org/name
        if not sep or not HEX40.match(Path(path).name):
            raise SystemExit(f"--pulled {spec!r}: want org/name=<dir named by its 40-hex commit>")
        out[repo_id] = Path(path)
    return out


def _upstream(url: str | None) -> str | None:
    """`hub`: the endpoint huggingface-hub itself uses on this host (HF_ENDPOINT or its default)."""
    if url != "hub":
        return url
    from huggingface_hub import constants

    return constants.ENDPOINT


def _serve(args: argparse.Namespace) -> int:
    root = Path(args.root)
    # A seed serves its pull in place (--pulled) from an empty root that may not exist yet; without
    # --pulled a missing root would serve an empty hub and every pull would 404.
    if (root.exists() or not args.pulled) and not root.is_dir():
        raise SystemExit(f"error: --root {args.root} is not a directory")
    args.upstream = _upstream(args.upstream)
    token = _read_token(args.token_file, "seed token")
    upstream_token = _read_token(args.upstream_token_file, "upstream token")
    try:
        server = serve(args.root, args.host, args.port, log_path=args.log, max_rate=args.max_rate,
                       page_size=args.page_size, token=token, pulled=_pulled(args.pulled),
                       upstream=args.upstream, upstream_token=upstream_token, pending_wait=args.pending_wait)
    except OSError as exc:  # the address is taken or not ours, the log cannot be opened
        where = exc.filename or f"cannot listen on {args.host}:{args.port}"
        raise SystemExit(f"error: {where}: {exc.strerror or exc}") from None
    # The first stdout line tells a supervisor (or a test) the bound address.
    print(f"serving {args.root} on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _publish(args: argparse.Namespace) -> int:
    try:
        commit = publish(args.src, args.root, args.repo, branch=args.branch, commit=args.commit)
    except ValueError as exc:  # Refused included: a symlink out of the tree, an unsafe manifest path
        print(f"error: {exc}", file=sys.stderr)
        return 2
    repo = args.repo or json.loads((Path(args.src) / PULL_MANIFEST).read_text())["repo"]
    print(json.dumps({"repo": repo, "branch": args.branch, "commit": commit}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mirror", help="Hub-compatible mirror: publish repos and serve them over HTTP")
    msub = p.add_subparsers(dest="mirror_command", required=True)
    s = msub.add_parser("serve", help="serve a mirror root to huggingface-hub clients")
    s.add_argument("--root", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8090, help="0 picks a free port (printed on stdout)")
    s.add_argument("--log", help="append a JSON line per request to this file")
    s.add_argument("--max-rate", type=int, help="cap each response at this many bytes/s")
    s.add_argument("--page-size", type=int, default=1000, help="tree entries per page")
    s.add_argument("--token-file", help="require 'Authorization: Bearer <token>' on every request "
                   "(a 0600 file: a LAN seed's fleet token)")
    s.add_argument("--pulled", action="append", default=[], metavar="ORG/NAME=DIR",
                   help="serve a weights-agent pull in place (repeatable); DIR is <root>/<org>--<name>/<commit>")
    s.add_argument("--upstream", help="list a pulled commit from this hub while its pull is under way "
                   "('hub': huggingface-hub's own endpoint)")
    s.add_argument("--upstream-token-file", help="hub token for --upstream")
    s.add_argument("--pending-wait", type=float, default=45.0,
                   help="seconds a request waits for a file the pull has not verified yet (then 503)")
    s.set_defaults(func=_serve)
    pub = msub.add_parser("publish", help="publish a directory as a commit of a repo")
    pub.add_argument("src")
    pub.add_argument("--root", required=True)
    pub.add_argument("--repo", help="org/name (default: the repo of a directory pulled by the weights agent)")
    pub.add_argument("--branch", default="main")
    pub.add_argument("--commit", help="40-hex commit id (default: the pulled commit, or one derived from content)")
    pub.set_defaults(func=_publish)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m r1deploy.mirror")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["mirror", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args) or 0)
