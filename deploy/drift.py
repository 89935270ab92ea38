"""Drift check: read-only, changes nothing, one report per host in one run.

    r1deploy drift-run inventories/prod.py                          # the usual way (exit 0/1/2)
    pyinfra -y inventories/prod.py deploy/drift.py && r1deploy drift reports/

Each run has an id (R1DEPLOY_DRIFT_RUN, else one made when this file first loads), a start
time and the hosts it must cover (the inventory's, honouring --limit): its manifest is
written before the first host's checks. Every host writes reports/drift/<run>/hosts/<host>.json,
"started" first and "finished" at the end; a host that could not connect writes nothing, so
the summary calls it "could not check". Checks: r1deploy.drift.checks via r1deploy.roles.drift.
R1DEPLOY_DRIFT_FULL=1 (or --data drift_full=True) rehashes the weights (sha256) instead of
size + mtime. R1DEPLOY_REPORTS: where reports go (default ./reports). R1DEPLOY_DRIFT_ONLY=
check[,check] (`drift-run --only`): only those checks, e.g. `gpu` on hosts that serve nothing yet.
R1DEPLOY_DRIFT_INJECT_RAISE=check[,check]: those checks raise (fault injection: proves a raising
check cannot end the run).
"""

from r1deploy.deploys import check_drift

check_drift()
