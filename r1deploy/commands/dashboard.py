"""`r1deploy dashboard`: write the fleet's Grafana dashboard and provisioning files; with --inventory,
the datasource points at that inventory's monitor host (loaded here, above observe/)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from r1deploy.observe.dashboard import DASHBOARD_FILE, PANELS, build_dashboard, provisioning


def _prometheus_url(inventory: str | None) -> str:
    if not inventory:
        return "http://localhost:9090"
    from r1deploy.fleet.inventory import load_host_data
    from r1deploy.fleet.validate import validate_inventory
    from r1deploy.observe.monitor import FleetHost, monitor_host

    rows = load_host_data(inventory)
    specs = validate_inventory(rows)
    hosts = [FleetHost.from_data(name, data, specs[name]) for name, data in rows]
    me = monitor_host(hosts)
    if me is None:
        raise SystemExit("this inventory runs no Prometheus (monitor_enable False, or no gateway and no monitor_host)")
    address = f"[{me.address}]" if ":" in me.address else me.address
    return f"http://{address}:{me.spec.monitor.port}"


def _cmd(args: argparse.Namespace) -> int:
    from r1deploy.observe import ExtraMissing, require_observe

    try:
        require_observe("r1deploy dashboard", "grafana_foundation_sdk")
    except ExtraMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    out = Path(args.out)
    files = {f"dashboards/{DASHBOARD_FILE}": json.dumps(build_dashboard(), indent=2) + "\n",
             **provisioning(_prometheus_url(args.inventory), args.dashboards_dir)}
    try:
        for rel, text in files.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_text(text)
    except OSError as exc:  # a directory that cannot be made or written: say so, no traceback
        print(f"r1deploy dashboard: cannot write {exc.filename or out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}/dashboards/{DASHBOARD_FILE} ({len(PANELS)} panels) and {out}/provisioning/")
    return 0


def register(sub) -> None:
    p = sub.add_parser("dashboard", help="write the fleet's Grafana dashboard and provisioning files")
    p.add_argument("--out", required=True, help="directory to write dashboards/ and provisioning/ into")
    p.add_argument("--inventory", help="point the datasource at this inventory's monitor host")
    p.add_argument("--dashboards-dir", default="/var/lib/grafana/dashboards/r1deploy",
                   help="where Grafana will find the dashboard JSON on its host")
    p.set_defaults(func=_cmd)
