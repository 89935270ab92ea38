"""The change window of a gateway change: what nginx logged while it happened (issue 23 item 1).

A window opens before the change (the time and the access log's size) and closes after it; the
lines nginx appended meanwhile are counted by r1deploy.fleet.bluegreen.count_failed. A change
that failed any request raises: the converge fails (pyinfra's exit 1, the host in its error
list), as an Ansible operator expects of a task whose `failed_when` holds. The change itself is
done by then and is not undone: it is the requests that failed, not the new state. A window whose
log cannot be read says "could not check", loudly, and does not pass for "ok".
"""

from __future__ import annotations

import json

from pyinfra import host
from pyinfra.api import OperationError
from r1deploy.roles._rollout import remote

from r1deploy.fleet.bluegreen import WindowReport, count_failed
from r1deploy.serving.edge import ACCESS_LOG

# Per gateway: the open window of the change this run makes (the edge's reload).
OPEN: dict[str, tuple[float, int]] = {}
# Every window's report this run, per gateway (reports/gateway-<host>.json).
REPORTS: dict[str, list[dict]] = {}


def open_window() -> tuple[float, int]:
    """(now on the host, the access log's size): the log's lines from that size on are the window's."""
    start, size = remote(f"date +%s.%N; stat -c %s {ACCESS_LOG} 2>/dev/null || echo 0", "change window").split()[:2]
    return float(start), int(size)


def close_window(window: tuple[float, int], changes: list[str], settle_s: int = 0) -> WindowReport:
    """The window's report: the lines appended since it opened (the whole log when it was rotated
    meanwhile: it shrank). `settle_s`: wait first, for requests a graceful reload left on old workers."""
    start, size = window
    out = remote(f"sleep {settle_s}; date +%s.%N; if [ ! -e {ACCESS_LOG} ]; then echo @@nolog; exit 0; fi; "
                 f"if [ $(stat -c %s {ACCESS_LOG}) -lt {size} ]; then o=1; else o={size + 1}; fi; "
                 f"tail -c +$o {ACCESS_LOG} || echo @@unreadable", "requests during the change")
    end, *lines = out.split("\n")
    if lines[:1] == ["@@nolog"]:  # nginx never served a request (a first install): none failed
        lines = []
    return count_failed(None if "@@unreadable" in lines else lines, start, float(end), changes)


def judge(report: WindowReport) -> None:
    """Report the window (the log, reports/gateway-<host>.json) and fail the change if any failed."""
    from r1deploy.roles.serve.rollout import _reports_dir

    REPORTS.setdefault(host.name, []).append(report.as_dict())
    (_reports_dir() / f"gateway-{host.name}.json").write_text(json.dumps(REPORTS[host.name], indent=2) + "\n")
    if report.verdict == "failed":
        raise OperationError(f"{host.name}: {report.summary()}: the change is made, but it was not hitless "
                             "(reports/gateway-*.json; nginx's access log)")
    if report.verdict == "could not check":
        host.log_styled(f"{report.summary()}", fg="yellow", bold=True)
    else:
        host.log(report.summary())


def edge_opened() -> None:
    OPEN[host.name] = open_window()


def edge_closed(settle_s: int) -> None:
    """After the edge's graceful reload (keys, TLS, site): its window, judged."""
    judge(close_window(OPEN.pop(host.name), ["nginx: graceful reload"], settle_s))
