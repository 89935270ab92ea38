"""The drift check's per-host part (see drift.py for the run's environment variables)."""

import os

from pyinfra import host, state

from r1deploy.drift.runs import RUN_ENV, HostReport, new_run_id, run_check, start_run


def _injected(check: str):
    def fn():
        raise RuntimeError(f"injected by R1DEPLOY_DRIFT_INJECT_RAISE={check}")
    return fn


def expected_hosts() -> list[str]:
    limit = state.limit_hosts
    return [h.name for h in state.inventory if not isinstance(limit, list) or h in limit]


def _names(var: str) -> set[str]:
    return set(filter(None, os.environ.get(var, "").split(",")))


def check_drift() -> None:
    """Read-only: every host writes its report; a crashing check is that host's "could not check"."""
    reports = os.environ.get("R1DEPLOY_REPORTS", "reports")
    only, inject = _names("R1DEPLOY_DRIFT_ONLY"), _names("R1DEPLOY_DRIFT_INJECT_RAISE")
    # One id for every host of this pyinfra process: the deploy file is executed once per host.
    run_id = os.environ.setdefault(RUN_ENV, new_run_id())
    full = os.environ.get("R1DEPLOY_DRIFT_FULL") == "1"
    manifest = start_run(reports, expected_hosts(), run_id, full=full,
                         keep=int(os.environ.get("R1DEPLOY_DRIFT_KEEP", "20")))
    report = HostReport(reports, manifest["run_id"], host.name)
    try:
        from r1deploy.roles._spec import host_spec
        from r1deploy.roles.drift import host_checks

        spec = host_spec()
        for check, fn in host_checks(spec, full or spec.drift.full):
            if only and check not in only:
                continue
            report.add(run_check(host.name, check, _injected(check) if check in inject else fn))
    except Exception as exc:  # noqa: BLE001 - a crash is a "could not check" for this host, not the run's end
        host.log(f"drift check crashed: {type(exc).__name__}: {exc}")
        report.finish(error=f"{type(exc).__name__}: {exc}")
    else:
        host.log(f"drift report: {report.finish()}")
