"""Watching the fleet: what Prometheus scrapes and pages on (monitor.py), the Grafana dashboard
(dashboard.py), `r1deploy bench` sweeps, their results and plots (bench_cli.py, bench.py,
bench_plot.py), and the operator's progress lines (progress.py)."""
