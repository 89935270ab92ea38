"""The Grafana dashboard: built by grafana-foundation-sdk, every query parsed by the real promtool,
and every vLLM series it or an alert names is one vLLM 0.32 exports."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_monitor import fleet, monitor_host

from r1deploy.observe.dashboard import PANELS, build_dashboard, concrete, panel_queries, provisioning
from r1deploy.observe.monitor import render_alert_rules

PROMTOOL = shutil.which("promtool")
VLLM_METRICS = Path(__file__).parent / "data" / "vllm-0.32.0-metrics.txt"


def exposed_vllm_series() -> set[str]:
    """What a scrape shows: counters get _total, histograms _bucket/_sum/_count (prometheus_client)."""
    names = set()
    for line in VLLM_METRICS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, kind = line.split()
        names |= {"counter": {f"{name}_total"}, "gauge": {name},
                  "histogram": {f"{name}_bucket", f"{name}_sum", f"{name}_count"}}[kind]
    return names


def test_dashboard_has_the_panels_operators_asked_for():
    board = build_dashboard()
    titles = {p["title"] for p in board["panels"] if p["type"] == "timeseries"}
    for want in ["Requests/s per node", "Time to first token", "Inter-token latency", "Output tokens/s per node",
                 "Running and waiting requests", "KV-cache usage", "Prefix-cache hit rate", "GPU memory used",
                 "GPU utilization", "GPU temperature", "GPU power", "Gateway requests/s"]:
        assert want in titles
    assert [v["name"] for v in board["templating"]["list"]] == ["node", "gateway"]
    assert all(p["datasource"]["uid"] == "r1-prometheus" for p in board["panels"] if p["type"] == "timeseries")
    assert len(panel_queries(board)) == sum(len(p.queries) for p in PANELS)


@pytest.mark.skipif(not PROMTOOL, reason="promtool missing")
def test_every_panel_query_parses_with_promtool(tmp_path):
    queries = panel_queries(build_dashboard())
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"r1:dashboard_query_{i}", "expr": concrete(expr)} for i, (_, expr) in enumerate(queries)]}]}
    (tmp_path / "q.yml").write_text(json.dumps(rules))  # JSON is YAML
    ran = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "q.yml")], capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0 and f"SUCCESS: {len(queries)} rules found" in ran.stdout, ran.stdout + ran.stderr


def test_every_vllm_series_named_is_one_vllm_exports():
    exported = exposed_vllm_series()
    text = " ".join(e for _, e in panel_queries(build_dashboard()))
    text += render_alert_rules(fleet(), monitor_host(fleet()))
    named = set(re.findall(r"vllm:[a-z_]+", text))
    assert named and named <= exported, sorted(named - exported)


def test_provisioning_points_grafana_at_the_monitor_and_the_dashboard_dir():
    files = provisioning("http://10.0.0.9:9090", "/var/lib/grafana/dashboards/r1deploy")
    assert 'url: "http://10.0.0.9:9090"' in files["provisioning/datasources/r1-prometheus.yaml"]
    assert "uid: r1-prometheus" in files["provisioning/datasources/r1-prometheus.yaml"]
    assert 'path: "/var/lib/grafana/dashboards/r1deploy"' in files["provisioning/dashboards/r1deploy.yaml"]
