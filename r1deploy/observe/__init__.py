"""Watching the fleet: what Prometheus scrapes and pages on (monitor.py), the Grafana dashboard
(dashboard.py), `r1deploy bench` sweeps, their results and plots (bench_cli.py, bench.py,
bench_plot.py), and the operator's progress lines (progress.py). The commands that load an
inventory for them live in r1deploy/commands/."""

from __future__ import annotations

import importlib


class ExtraMissing(Exception):
    """A command whose packages come with the `observe` extra, run where it is not installed."""


def require_observe(what: str, module: str, instead: str = "") -> None:
    """`dashboard` (Grafana's builder SDK) and `bench` plots (matplotlib) are not core
    dependencies: say which extra to install, before any work, instead of a ModuleNotFoundError."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise ExtraMissing(f"{what}: {module} is not installed; it comes with the observe extra: "
                           "pip install 'r1deploy[observe]'" + (f" ({instead})" if instead else "")) from None
