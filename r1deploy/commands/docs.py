"""`r1deploy docs`: write the spec reference (docs/spec.md) from the pydantic spec, or --check that
the file on disk is what the spec generates (exit 1 when stale)."""

from __future__ import annotations

import sys
from pathlib import Path

from r1deploy.specdoc import markdown


def _docs_cmd(args) -> int:
    out, text = Path(args.out), markdown()
    if args.check:
        if not out.exists() or out.read_text() != text:
            print(f"{out} is stale: run `r1deploy docs --out {out}`", file=sys.stderr)
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"spec reference written to {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("docs", help="write the spec reference generated from the spec (docs/spec.md)")
    p.add_argument("--out", default="docs/spec.md")
    p.add_argument("--check", action="store_true", help="exit 1 when the file differs from the spec's")
    p.set_defaults(func=_docs_cmd)
