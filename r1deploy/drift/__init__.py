"""Drift: runs and their summary (runs.py), what the spec renders today against what a host reports
(checks.py), one row per serving group (groups.py), and `r1deploy drift` / `drift-run` (cli.py)."""
