"""Drift report: does each host still run what the spec says, and does it answer?

`deploy/drift.py` reads facts only (it changes nothing and reports no changes) and writes one
JSON file per host; `r1deploy drift DIR` folds them into a table or stable JSON with
DeepOps-style exit codes: 0 no drift, 1 drift or a failed check, 2 a host could not be checked.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Finding:
    host: str
    check: str
    ok: bool | None  # None: could not check
    detail: str


def findings_path(directory: str | Path, host: str) -> Path:
    return Path(directory) / f"drift-{host}.json"


def write_host(directory: str | Path, host: str, findings: list[Finding]) -> Path:
    path = findings_path(directory, host)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(f) for f in findings], indent=2) + "\n")
    return path


def read_all(directory: str | Path) -> list[Finding]:
    found: list[Finding] = []
    for path in sorted(Path(directory).glob("drift-*.json")):
        found.extend(Finding(**raw) for raw in json.loads(path.read_text()))
    return found


def exit_code(findings: list[Finding]) -> int:
    if any(f.ok is False for f in findings):
        return 1
    if any(f.ok is None for f in findings) or not findings:
        return 2
    return 0


def table(findings: list[Finding]) -> str:
    rows = [f"{'host':16} {'check':14} {'state':8} detail"]
    for f in findings:
        state = {True: "ok", False: "DRIFT", None: "unknown"}[f.ok]
        rows.append(f"{f.host:16} {f.check:14} {state:8} {f.detail}")
    verdict = {0: "no drift", 1: "drift found", 2: "some hosts could not be checked"}[exit_code(findings)]
    rows.append(verdict)
    return "\n".join(rows)


def _cmd(args: argparse.Namespace) -> int:
    from r1deploy.group_drift import group_findings

    findings = read_all(args.reports)
    findings += group_findings(findings)  # a row per serving group, naming the member that is down
    print(json.dumps([asdict(f) for f in findings], indent=2) if args.json else table(findings))
    if args.textfile:
        _write_textfile(Path(args.textfile), findings)
    return exit_code(findings)


def _write_textfile(path: Path, findings: list[Finding]) -> None:
    """For the node exporter's textfile collector: written beside and renamed, never half-read."""
    from r1deploy.monitor import drift_textfile

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(drift_textfile(asdict(f) for f in findings))
    tmp.replace(path)


def register(sub) -> None:
    p = sub.add_parser("drift", help="summarise a drift check (pyinfra INVENTORY deploy/drift.py); exit 0/1/2")
    p.add_argument("reports", nargs="?", default="reports", help="directory with drift-<host>.json files")
    p.add_argument("--json", action="store_true")
    p.add_argument("--textfile", metavar="FILE", help="also write the result as Prometheus metrics "
                   "(e.g. /var/lib/prometheus/node-exporter/r1-drift.prom on the monitor host)")
    p.set_defaults(func=_cmd)

