"""Drift check: read-only, changes nothing, one report per host in one run.

    r1deploy drift-run inventories/prod.py                          # the usual way (exit 0/1/2)
    pyinfra -y inventories/prod.py deploy/drift.py && r1deploy drift reports/

Each run has an id (R1DEPLOY_DRIFT_RUN, else one made when this file first loads), a start
time and the hosts it must cover (the inventory's, honouring --limit): its manifest is
written before the first host's checks. Every host writes reports/drift/<run>/hosts/<host>.json,
"started" first and "finished" at the end; a host that could not connect writes nothing, so
the summary calls it "could not check". Checks: r1deploy.drift.checks via roles.drift.
R1DEPLOY_DRIFT_FULL=1 (or --data drift_full=True) rehashes the weights (sha256) instead of
size + mtime. R1DEPLOY_REPORTS: where reports go (default ./reports). R1DEPLOY_DRIFT_ONLY=
check[,check] (`drift-run --only`): only those checks, e.g. `gpu` on hosts that serve nothing yet.
R1DEPLOY_DRIFT_INJECT_RAISE=check[,check]: those checks raise (fault injection: proves a raising
check cannot end the run).
"""

import os

from pyinfra import host, state

from r1deploy.drift.runs import RUN_ENV, HostReport, new_run_id, run_check, start_run
from roles._spec import host_spec

REPORTS = os.environ.get("R1DEPLOY_REPORTS", "reports")
ONLY = set(filter(None, os.environ.get("R1DEPLOY_DRIFT_ONLY", "").split(",")))
INJECT_RAISE = set(filter(None, os.environ.get("R1DEPLOY_DRIFT_INJECT_RAISE", "").split(",")))
# One id for every host of this pyinfra process: the file is executed once per host.
RUN_ID = os.environ.setdefault(RUN_ENV, new_run_id())


def injected(check: str):
    def fn():
        raise RuntimeError(f"injected by R1DEPLOY_DRIFT_INJECT_RAISE={check}")
    return fn


def expected_hosts() -> list[str]:
    limit = state.limit_hosts
    return [h.name for h in state.inventory if not isinstance(limit, list) or h in limit]


FULL = os.environ.get("R1DEPLOY_DRIFT_FULL") == "1"
manifest = start_run(REPORTS, expected_hosts(), RUN_ID, full=FULL, keep=int(os.environ.get("R1DEPLOY_DRIFT_KEEP", "20")))
report = HostReport(REPORTS, manifest["run_id"], host.name)
try:
    from roles.drift import host_checks

    spec = host_spec()
    full = FULL or spec.drift.full
    for check, fn in host_checks(spec, full):
        if ONLY and check not in ONLY:
            continue
        report.add(run_check(host.name, check, injected(check) if check in INJECT_RAISE else fn))
except Exception as exc:  # noqa: BLE001 - a crash is a "could not check" for this host, not the run's end
    host.log(f"drift check crashed: {type(exc).__name__}: {exc}")
    report.finish(error=f"{type(exc).__name__}: {exc}")
else:
    host.log(f"drift report: {report.finish()}")
