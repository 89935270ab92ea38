"""`r1deploy drift` (summarise a run) and `r1deploy drift-run` (start one: manifest, pyinfra, summary).

    r1deploy drift-run inventories/prod.py [--limit HOST] [--full] [--textfile F.prom]   # exit 0/1/2
    r1deploy drift [reports] [--run ID] [--json] [--textfile F.prom] [--max-age S]
    r1deploy drift --print-cron --inventory inventories/prod.py                        # a crontab line
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from r1deploy.drift.runs import (
    RUN_ENV,
    Finding,
    as_json,
    exit_code,
    new_run_id,
    runs_dir,
    stale,
    start_run,
    summarise,
    table,
    textfile,
    write_textfile,
)
from r1deploy.paths import deploy_file, run_dir

DEPLOY = deploy_file("drift")
REPO = run_dir()


def _output(args: argparse.Namespace, manifest, findings: list[Finding]) -> int:
    from r1deploy.drift.groups import group_findings

    findings = findings + group_findings(findings)  # a row per serving group, naming the member that is down
    print(json.dumps(as_json(manifest, findings), indent=2) if args.json else table(manifest, findings))
    if args.textfile:
        write_textfile(args.textfile, textfile(manifest, findings))
    return exit_code(findings)


def expected_hosts(inventory_path: str, limits: list[str]) -> list[str]:
    """The inventory's hosts that pyinfra's --limit patterns select (group names or globs),
    loaded offline: nothing connects."""
    from pyinfra_cli.cli import _get_inventory_pattern_matches

    from r1deploy.fleet.inventory import offline_inventory

    with offline_inventory(inventory_path, cwd=REPO) as inventory:
        hosts = _get_inventory_pattern_matches(inventory, limits, "--limit") if limits else list(inventory)
        return [h.name for h in hosts]


def cron_line(args: argparse.Namespace) -> str:
    bin_dir = Path(sys.executable).parent
    r1 = str(bin_dir / "r1deploy") if (bin_dir / "r1deploy").exists() else f"{sys.executable} -m r1deploy"
    reports = os.path.abspath(args.reports)
    prom = args.textfile or os.path.join(reports, "drift", "r1deploy_drift.prom")
    logdir = shlex.quote(os.path.join(reports, "drift"))
    cmd = (f"mkdir -p {logdir} && cd {shlex.quote(str(REPO))} && {r1} drift-run {shlex.quote(os.path.abspath(args.inventory))} "
           f"--reports {shlex.quote(reports)} --textfile {shlex.quote(prom)} "
           f">> {shlex.quote(os.path.join(reports, 'drift', 'cron.log'))} 2>&1")
    return f"{args.schedule} {cmd}"  # no '%' in it: cron would cut the line there


def _summary(args: argparse.Namespace) -> int:
    if args.print_cron:
        if not args.inventory:
            raise SystemExit("--print-cron needs --inventory (the fleet inventory the cron job checks)")
        print(cron_line(args))
        return 0
    manifest, findings = summarise(args.reports, args.run)
    old = stale(manifest, args.max_age)
    return _output(args, manifest, findings + ([old] if old else []))


def _run(args: argparse.Namespace) -> int:
    from r1deploy.fleet.inventory import InventoryFileError
    from r1deploy.spec import SpecError

    try:
        hosts = expected_hosts(args.inventory, args.limit)
    except (InventoryFileError, SpecError) as exc:
        return _could_not_load(args, exc)
    run_id = new_run_id()
    # The manifest comes first: a host that never connects is still a host this run had to cover.
    start_run(args.reports, hosts, run_id, full=args.full, keep=args.keep)
    argv = [sys.executable, "-m", "pyinfra", "-y", os.path.abspath(args.inventory), str(DEPLOY)]
    for pattern in args.limit:
        argv += ["--limit", pattern]
    for item in args.data:
        argv += ["--data", item]
    env = {**os.environ, RUN_ENV: run_id, "R1DEPLOY_REPORTS": os.path.abspath(args.reports),
           "R1DEPLOY_DRIFT_FULL": "1" if args.full else "0", "R1DEPLOY_DRIFT_KEEP": str(args.keep),
           "R1DEPLOY_DRIFT_ONLY": ",".join(args.only)}
    log = runs_dir(args.reports) / run_id / "pyinfra.log"
    with open(log, "w") as out:
        try:
            done = subprocess.run(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=args.timeout)
            note = None if done.returncode == 0 else f"pyinfra exited {done.returncode} (see {log})"
        except subprocess.TimeoutExpired:
            note = f"pyinfra ran past {args.timeout}s and was stopped (see {log})"
    manifest, findings = summarise(args.reports, run_id)
    if note:  # hosts it failed on already say "could not check"; this says where to look
        print(note, file=sys.stderr)
    return _output(args, manifest, findings)


def _could_not_load(args: argparse.Namespace, exc: Exception) -> int:
    """An inventory that does not load checked nothing: say why, once, and let the textfile say
    "could not check" too (a scrape must not keep reading the last run's 0)."""
    print(f"drift: could not check {args.inventory}: {exc}", file=sys.stderr)
    return _output(args, None, [Finding("-", "inventory", None, str(exc).splitlines()[0][:300])])


def _outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reports", default=os.environ.get("R1DEPLOY_REPORTS", "reports"),
                   help="reports directory (runs under <reports>/drift/)")
    p.add_argument("--json", action="store_true", help="stable JSON (schema 1) instead of the table")
    p.add_argument("--textfile", help="also write a Prometheus textfile (*.prom) for node_exporter")


def register(sub) -> None:
    p = sub.add_parser("drift", help="summarise the latest drift run (or --run ID); exit 0/1/2")
    p.add_argument("reports_dir", nargs="?", help="reports directory (default: --reports)")
    _outputs(p)
    p.add_argument("--run", help="a run id (default: the one drift/latest points at)")
    p.add_argument("--max-age", type=float, help="seconds: an older latest run is 'could not check'")
    p.add_argument("--print-cron", action="store_true", help="print a crontab line that runs drift-run")
    p.add_argument("--inventory", help="with --print-cron: the fleet inventory")
    p.add_argument("--schedule", default="*/15 * * * *", help="with --print-cron: cron schedule")
    p.set_defaults(func=lambda a: _summary(_reports(a)))
    r = sub.add_parser("drift-run", help="run a drift check over an inventory and summarise it; exit 0/1/2")
    r.add_argument("inventory")
    _outputs(r)
    r.add_argument("--limit", action="append", default=[], help="pyinfra --limit pattern (repeatable)")
    r.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                   help="pyinfra --data override (repeatable), e.g. ssh_key=/path")
    r.add_argument("--full", action="store_true", help="rehash every weights file (sha256)")
    r.add_argument("--only", action="append", default=[], metavar="CHECK",
                   help="run only this check (repeatable), e.g. --only gpu on a host being provisioned")
    r.add_argument("--keep", type=int, default=20, help="runs kept under <reports>/drift")
    r.add_argument("--timeout", type=int, default=1800, help="seconds the pyinfra run may take")
    r.set_defaults(func=_run)


def _reports(args: argparse.Namespace) -> argparse.Namespace:
    if args.reports_dir:
        args.reports = args.reports_dir
    return args
