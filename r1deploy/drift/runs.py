"""Drift runs: each run has an id, a start time and the hosts it must cover; its summary reads
only that run, and a host without a finished report of that run is "could not check".

Layout under the reports directory (R1DEPLOY_REPORTS, default ./reports):

    drift/<run-id>/run.json          {"run_id", "started", "started_ts", "hosts": [...], "full"}
    drift/<run-id>/hosts/<host>.json {"run_id", "host", "status": "started"|"finished"|"crashed",
                                      "started", "finished", "error", "findings": [...]}
    drift/latest -> <run-id>         the newest run; the last `keep` runs are kept

A finding is {"host", "check", "ok": true|false|null, "detail"} (null: could not check).
Exit codes (DeepOps-style): 0 no drift, 1 drift found, 2 something could not be checked and
nothing drifted. The summary JSON (`r1deploy drift --json`, schema 1) has the keys
"schema", "run" (the manifest), "exit_code", "verdict" and "findings" (each finding plus
"state": "ok" | "drift" | "could not check").
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RUN_ENV = "R1DEPLOY_DRIFT_RUN"
SCHEMA = 1
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
STATES = {True: "ok", False: "drift", None: "could not check"}
VERDICTS = {0: "no drift", 1: "drift found", 2: "some checks could not be made"}


@dataclass(frozen=True)
class Finding:
    host: str
    check: str
    ok: bool | None  # None: could not check
    detail: str


def new_run_id(now: float | None = None) -> str:
    """Sortable by time (UTC second) and unique across controllers (random tail)."""
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return f"{stamp:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    """Atomic: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def runs_dir(reports: str | Path) -> Path:
    return Path(reports) / "drift"


def run_dir(reports: str | Path, run_id: str) -> Path:
    if not SAFE_ID.match(run_id):
        raise ValueError(f"{RUN_ENV}={run_id!r}: a run id is letters, digits, '.', '_' or '-'")
    return runs_dir(reports) / run_id


def _link_latest(reports: str | Path, run_id: str) -> None:
    base = runs_dir(reports)
    tmp = base / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_id)  # relative: the reports directory can move or be copied
    os.replace(tmp, base / "latest")


def start_run(reports: str | Path, hosts: Iterable[str], run_id: str | None = None, full: bool = False,
              keep: int = 20, now: float | None = None) -> dict[str, Any]:
    """Write a run's manifest (once: an existing manifest of that id is kept), point `latest`
    at it and drop all but the newest `keep` runs. Returns the manifest."""
    run_id = run_id or new_run_id(now)
    path = run_dir(reports, run_id) / "run.json"
    if path.exists():
        return json.loads(path.read_text())
    ts = time.time() if now is None else now
    manifest = {"run_id": run_id, "started": _iso(ts), "started_ts": ts, "hosts": sorted(set(hosts)), "full": full}
    _write_json(path, manifest)
    _link_latest(reports, run_id)
    prune(reports, keep)
    return manifest


def list_runs(reports: str | Path) -> list[dict[str, Any]]:
    """Manifests of the runs on disk, oldest first."""
    found = []
    base = runs_dir(reports)
    for path in base.glob("*/run.json") if base.is_dir() else []:
        if path.parent.is_symlink():  # `latest` is a name for one of them, not a run
            continue
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a broken run is not a run; prune leaves it for the operator
    return sorted(found, key=lambda m: (m.get("started_ts", 0), m.get("run_id", "")))


def prune(reports: str | Path, keep: int) -> list[str]:
    """Remove all but the newest `keep` runs (never the one `latest` points at)."""
    runs = list_runs(reports)
    latest = latest_run_id(reports)
    dropped = []
    for manifest in runs[:max(0, len(runs) - max(keep, 1))]:
        if manifest["run_id"] != latest:
            shutil.rmtree(run_dir(reports, manifest["run_id"]), ignore_errors=True)
            dropped.append(manifest["run_id"])
    return dropped


def latest_run_id(reports: str | Path) -> str | None:
    link = runs_dir(reports) / "latest"
    return os.readlink(link) if link.is_symlink() else None


def host_report_path(reports: str | Path, run_id: str, host: str) -> Path:
    return run_dir(reports, run_id) / "hosts" / f"{host}.json"


class HostReport:
    """One host's report in one run: written as "started" first, so a check that never
    finishes leaves a report that says so."""

    def __init__(self, reports: str | Path, run_id: str, host: str, now: Callable[[], float] = time.time):
        self.path = host_report_path(reports, run_id, host)
        self.now = now
        self.data: dict[str, Any] = {"run_id": run_id, "host": host, "status": "started",
                                     "started": _iso(now()), "finished": None, "error": None, "findings": []}
        _write_json(self.path, self.data)

    def add(self, findings: Iterable[Finding]) -> None:
        self.data["findings"].extend(asdict(f) for f in findings)

    def finish(self, error: str | None = None) -> Path:
        self.data.update(status="crashed" if error else "finished", finished=_iso(self.now()), error=error)
        _write_json(self.path, self.data)
        return self.path


def run_check(host: str, check: str, fn: Callable[[], Iterable[Finding]]) -> list[Finding]:
    """A check's findings; any exception inside it is that check's "could not check"."""
    try:
        return list(fn())
    except Exception as exc:  # noqa: BLE001 - the point: nothing a check raises ends the run
        return [Finding(host, check, None, f"check raised {type(exc).__name__}: {exc}")]


def _host_findings(manifest: dict[str, Any], host: str, raw: dict[str, Any] | None) -> list[Finding]:
    """What one expected host contributes: its findings, or why it could not be checked."""
    if raw is None:
        return [Finding(host, "report", None, "no report in this run (not reachable, or the check never ran)")]
    if raw.get("run_id") != manifest["run_id"]:
        return [Finding(host, "report", None, f"stale report from run {raw.get('run_id')!r}")]
    if raw.get("status") != "finished":
        why = raw.get("error") or "the check did not finish"
        return [Finding(host, "report", None, f"{raw.get('status')}: {why}")]
    findings = [Finding(**f) for f in raw.get("findings", [])]
    return findings or [Finding(host, "report", None, "the report holds no checks")]


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"run_id": None, "status": "unreadable", "error": str(exc)}


def summarise(reports: str | Path, run_id: str | None = None) -> tuple[dict[str, Any] | None, list[Finding]]:
    """(manifest, findings) of one run (default: latest). Only that run's reports count."""
    run_id = run_id or latest_run_id(reports)
    if run_id is None:
        return None, [Finding("-", "run", None, f"no drift run under {runs_dir(reports)}")]
    try:
        manifest = json.loads((run_dir(reports, run_id) / "run.json").read_text())
    except (OSError, ValueError) as exc:
        return None, [Finding("-", "run", None, f"run {run_id}: manifest unreadable ({exc})")]
    findings: list[Finding] = []
    for host in manifest["hosts"]:
        raw = _read_report(host_report_path(reports, run_id, host))
        if raw is not None and raw.get("status") == "unreadable":
            findings.append(Finding(host, "report", None, f"report unreadable: {raw['error']}"))
            continue
        findings.extend(_host_findings(manifest, host, raw))
    if not manifest["hosts"]:
        findings.append(Finding("-", "run", None, "the run covered no hosts"))
    return manifest, findings


def stale(manifest: dict[str, Any] | None, max_age_s: float | None, now: float | None = None) -> Finding | None:
    """A run older than max_age_s is no evidence about now."""
    if manifest is None or max_age_s is None:
        return None
    age = (time.time() if now is None else now) - manifest["started_ts"]
    if age > max_age_s:
        return Finding("-", "run", None, f"latest run {manifest['run_id']} is {age:.0f}s old (> {max_age_s:.0f}s)")
    return None


def exit_code(findings: list[Finding]) -> int:
    if any(f.ok is False for f in findings):
        return 1
    if any(f.ok is None for f in findings) or not findings:
        return 2
    return 0


def table(manifest: dict[str, Any] | None, findings: list[Finding]) -> str:
    rows = []
    if manifest:
        rows.append(f"run {manifest['run_id']} started {manifest['started']} "
                    f"({len(manifest['hosts'])} host(s){', full rehash' if manifest.get('full') else ''})")
    rows.append(f"{'host':16} {'check':16} {'state':8} detail")
    for f in findings:
        state = {True: "ok", False: "DRIFT", None: "unknown"}[f.ok]
        rows.append(f"{f.host:16} {f.check:16} {state:8} {f.detail}")
    rows.append(VERDICTS[exit_code(findings)])
    return "\n".join(rows)


def as_json(manifest: dict[str, Any] | None, findings: list[Finding]) -> dict[str, Any]:
    code = exit_code(findings)
    return {"schema": SCHEMA, "run": manifest, "exit_code": code, "verdict": VERDICTS[code],
            "findings": [{**asdict(f), "state": STATES[f.ok]} for f in findings]}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def textfile(manifest: dict[str, Any] | None, findings: list[Finding]) -> str:
    """Prometheus text exposition for node_exporter's textfile collector: per check
    0 ok / 1 drift / 2 could not check, the run's start time and the overall exit code."""
    value = {True: 0, False: 1, None: 2}
    rank = {0: 0, 2: 1, 1: 2}  # as exit_code: a drift outweighs a could-not-check
    worst: dict[tuple[str, str], int] = {}
    for f in findings:  # one sample per (host, check): a check with several findings keeps its worst
        key = (f.host, f.check)
        worst[key] = max(worst.get(key, 0), value[f.ok], key=rank.__getitem__)
    lines = ["# HELP r1deploy_drift_check Drift check state: 0 ok, 1 drift, 2 could not check.",
             "# TYPE r1deploy_drift_check gauge"]
    lines += [f'r1deploy_drift_check{{host="{_label(h)}",check="{_label(c)}"}} {v}'
              for (h, c), v in sorted(worst.items())]
    lines += ["# HELP r1deploy_drift_exit_code Exit code of the drift summary (0 ok, 1 drift, 2 unknown).",
              "# TYPE r1deploy_drift_exit_code gauge", f"r1deploy_drift_exit_code {exit_code(findings)}",
              "# HELP r1deploy_drift_run_timestamp_seconds When the summarised drift run started.",
              "# TYPE r1deploy_drift_run_timestamp_seconds gauge",
              f"r1deploy_drift_run_timestamp_seconds {manifest['started_ts'] if manifest else 0:.3f}"]
    return "\n".join(lines) + "\n"


def write_textfile(path: str | Path, text: str) -> None:
    """Atomic (the collector must never read half a file); the name must end in .prom."""
    path = Path(path)
    if path.suffix != ".prom":
        raise ValueError(f"{path}: node_exporter's textfile collector reads only *.prom files")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def register(sub) -> None:
    from r1deploy.drift.cli import register as register_cli

    register_cli(sub)
