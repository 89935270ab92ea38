"""The fleet's Grafana dashboard, built with Grafana's own grafana-foundation-sdk, and its provisioning.

`r1deploy dashboard --out DIR [--inventory INV]` writes the dashboard JSON and the provisioning
files Grafana reads at start (a Prometheus datasource pointing at the monitor host, a file
provider for the dashboard). Panels are per node (`$node`) and per gateway (`$gateway`): the
labels every target carries (r1deploy/observe/monitor.py). The PromQL lives in PANELS so tests and the
lab can check each query against promtool and a real Prometheus.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

DATASOURCE_UID = "r1-prometheus"
DASHBOARD_UID = "r1-fleet"
DASHBOARD_FILE = "r1-fleet.json"
RATE = "$__rate_interval"
N = 'node=~"$node"'
G = 'gateway=~"$gateway"'


@dataclass(frozen=True)
class PanelSpec:
    title: str
    unit: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)
    row: str


def _quantiles(metric: str, by: str, sel: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}[{RATE}])))",
                  f"p{int(q * 100)} {{{{{by}}}}}") for q in (0.5, 0.99))


PANELS: tuple[PanelSpec, ...] = (
    PanelSpec("Requests/s per node", "reqps", (
        (f"sum by (node) (rate(vllm:request_success_total{{{N}}}[{RATE}]))", "{{node}}"),), "Serving"),
    PanelSpec("Output tokens/s per node", "short", (
        (f"sum by (node) (rate(vllm:generation_tokens_total{{{N}}}[{RATE}]))", "{{node}}"),), "Serving"),
    PanelSpec("Time to first token", "s", _quantiles("vllm:time_to_first_token_seconds", "node", N), "Serving"),
    PanelSpec("Inter-token latency", "s", _quantiles("vllm:inter_token_latency_seconds", "node", N), "Serving"),
    PanelSpec("Running and waiting requests", "short", (
        (f"sum by (node) (vllm:num_requests_running{{{N}}})", "running {{node}}"),
        (f"sum by (node) (vllm:num_requests_waiting{{{N}}})", "waiting {{node}}")), "Serving"),
    PanelSpec("KV-cache usage", "percentunit", (
        (f"max by (node) (vllm:kv_cache_usage_perc{{{N}}})", "{{node}}"),), "Serving"),
    PanelSpec("Prefix-cache hit rate", "percentunit", (
        (f"sum by (node) (rate(vllm:prefix_cache_hits_total{{{N}}}[{RATE}])) / "
         f"sum by (node) (rate(vllm:prefix_cache_queries_total{{{N}}}[{RATE}]))", "{{node}}"),), "Serving"),
    PanelSpec("Gateway requests/s", "reqps", (
        (f"sum by (gateway) (rate(vllm_router_requests_total{{{G}}}[{RATE}]))", "{{gateway}}"),), "Gateway"),
    # The router's completion/chat latency: vllm-router 0.1 describes a request_duration histogram
    # but records only this one (seen on the lab's /metrics after smoke traffic).
    PanelSpec("Gateway request duration", "s",
              _quantiles("vllm_router_generate_duration_seconds", "gateway", G), "Gateway"),
    PanelSpec("Gateway healthy backends", "short", (
        (f"max by (gateway) (vllm_router_active_workers{{{G}}})", "{{gateway}}"),), "Gateway"),
    PanelSpec("GPU memory used", "decmbytes", (
        (f"sum by (node, gpu) (DCGM_FI_DEV_FB_USED{{{N}}})", "{{node}} GPU {{gpu}}"),), "GPUs"),
    PanelSpec("GPU utilization", "percent", (
        (f"avg by (node, gpu) (DCGM_FI_DEV_GPU_UTIL{{{N}}})", "{{node}} GPU {{gpu}}"),), "GPUs"),
    PanelSpec("GPU temperature", "celsius", (
        (f"max by (node, gpu) (DCGM_FI_DEV_GPU_TEMP{{{N}}})", "{{node}} GPU {{gpu}}"),), "GPUs"),
    PanelSpec("GPU power", "watt", (
        (f"sum by (node, gpu) (DCGM_FI_DEV_POWER_USAGE{{{N}}})", "{{node}} GPU {{gpu}}"),), "GPUs"),
    PanelSpec("Targets up", "short", (
        ('sum by (job) (up{job!="prometheus"})', "{{job}} up"),
        ('count by (job) (up{job!="prometheus"})', "{{job}} targets")), "Fleet"),
)


def build_dashboard(panels: tuple[PanelSpec, ...] = PANELS) -> dict:
    """The dashboard as Grafana's JSON model (a plain dict), built by the SDK's typed builders."""
    from grafana_foundation_sdk.builders import dashboard as db
    from grafana_foundation_sdk.builders import prometheus, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

    ds = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)

    def variable(name: str, query: str):
        return (db.QueryVariable(name).label(name).datasource(ds).query(query).multi(True)
                .include_all(True).all_value(".*").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED))

    board = (db.Dashboard("r1 fleet").uid(DASHBOARD_UID).tags(["r1deploy", "vllm"]).refresh("30s")
             .time("now-3h", "now").timezone("browser")
             .with_variable(variable("node", 'label_values(up{job=~"vllm.*"}, node)'))
             .with_variable(variable("gateway", 'label_values(up{job="router"}, gateway)')))
    row = None
    for p in panels:
        if p.row != row:
            row = p.row
            board = board.with_row(db.Row(row))
        panel = timeseries.Panel().title(p.title).unit(p.unit).datasource(ds).height(8).span(12)
        for ref, (expr, legend) in zip("ABCDEFGH", p.queries, strict=False):
            panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref))
        board = board.with_panel(panel)
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel of a dashboard JSON."""
    return [(p.get("title", ""), t["expr"]) for p in dashboard.get("panels", [])
            for t in p.get("targets", []) if t.get("expr")]


def concrete(expr: str, node: str = ".*", gateway: str = ".*", rate: str = "5m") -> str:
    """A dashboard query with Grafana's variables filled in, as Prometheus would receive it."""
    return expr.replace("$__rate_interval", rate).replace("$node", node).replace("$gateway", gateway)


def provisioning(prometheus_url: str, dashboards_dir: str) -> dict[str, str]:
    """Grafana's provisioning files (relative path -> YAML text)."""
    datasource = (
        "# Rendered by r1deploy: the fleet's Prometheus for Grafana.\napiVersion: 1\ndatasources:\n"
        f"  - name: r1 Prometheus\n    uid: {DATASOURCE_UID}\n    type: prometheus\n    access: proxy\n"
        f"    url: {json.dumps(prometheus_url)}\n    isDefault: true\n    editable: false\n")
    provider = (
        "# Rendered by r1deploy: the fleet dashboard from files.\napiVersion: 1\nproviders:\n"
        "  - name: r1deploy\n    folder: r1deploy\n    type: file\n    disableDeletion: true\n"
        f"    allowUiUpdates: false\n    options:\n      path: {json.dumps(dashboards_dir)}\n")
    return {"provisioning/datasources/r1-prometheus.yaml": datasource,
            "provisioning/dashboards/r1deploy.yaml": provider}
