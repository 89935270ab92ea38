"""The fleet's Prometheus config and alert rules, checked and unit-tested by the real promtool."""

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from r1deploy.observe.monitor import (
    FleetHost,
    MonitorError,
    monitor_host,
    node_exporter_args,
    prometheus_args,
    render_alert_rules,
    render_dcgm_exporter,
    render_prometheus_config,
    scrape_jobs,
)
from r1deploy.spec import SpecError, spec_from_host_data

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(not PROMTOOL, reason="promtool (Debian: apt-get install prometheus) missing")
BASE = {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": "a" * 40}


def fleet(**gw_extra) -> list[FleetHost]:
    def h(name, addr, **data):
        return FleetHost(name, spec_from_host_data(name, {**BASE, "vllm_host_ip": addr, **data}), addr)

    return [h("gpu1", "10.0.0.1", gpu_expected_count=8, vllm_api_key_env="R1_KEY"),
            h("gpu2", "10.0.0.2", gpu_expected_count=8),
            h("gw", "10.0.0.9", fleet_role="gateway", **gw_extra)]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def write_rendered(tmp_path: Path, hosts: list[FleetHost]) -> Path:
    mon = monitor_host(hosts)
    (tmp_path / "prometheus.yml").write_text(render_prometheus_config(hosts, mon))
    (tmp_path / "r1-alerts.rules.yml").write_text(render_alert_rules(hosts, mon))
    (tmp_path / "r1-api-key-r1_key").write_text("sk-test\n")
    return tmp_path


def test_the_gateway_runs_prometheus_unless_the_inventory_names_a_host():
    assert monitor_host(fleet()).name == "gw"
    hosts = [FleetHost(h.name, h.spec.model_copy(update={"monitor": h.spec.monitor.model_copy(
        update={"host": "gpu2"})}), h.address) for h in fleet()]
    assert monitor_host(hosts).name == "gpu2"
    hosts = [FleetHost(h.name, h.spec.model_copy(update={"monitor": h.spec.monitor.model_copy(
        update={"host": "ops-9"})}), h.address) for h in fleet()]
    with pytest.raises(MonitorError, match="monitor_host: 'ops-9' is not a host"):
        monitor_host(hosts)


def test_a_typo_in_a_monitor_key_names_the_key():
    with pytest.raises(SpecError, match="monitor_retention_dayz: unknown setting"):
        spec_from_host_data("gw", {**BASE, "monitor_retention_dayz": 3})


def test_every_host_vllm_router_and_gpus_are_scraped_by_inventory_name():
    jobs = {j["job_name"]: j for j in scrape_jobs(fleet(), monitor_host(fleet()))}
    assert [sc["labels"]["node"] for sc in jobs["node"]["static_configs"]] == ["gpu1", "gpu2", "gw"]
    assert jobs["prometheus"]["static_configs"][0]["targets"] == ["10.0.0.9:9090"]  # where it listens
    assert jobs["node"]["static_configs"][0]["targets"] == ["10.0.0.1:9100"]
    # a node with an API key gets its own job that sends the key from a file, never inline
    assert jobs["vllm-r1_key"]["authorization"] == {"type": "Bearer", "credentials_file": "r1-api-key-r1_key"}
    assert jobs["vllm"]["static_configs"] == [{"targets": ["10.0.0.2:8000"],
                                               "labels": {"node": "gpu2", "model": "DeepSeek-R1"}}]
    # the router's metrics port is bound to loopback: Prometheus on the gateway scrapes it there
    assert jobs["router"]["static_configs"][0]["targets"] == ["127.0.0.1:29000"]
    assert len(jobs["dcgm"]["static_configs"]) == 2


def test_a_vllm_key_from_a_file_gets_its_own_job_named_without_the_key():
    hosts = fleet()
    hosts[1] = FleetHost("gpu2", spec_from_host_data("gpu2", {**BASE, "vllm_host_ip": "10.0.0.2",
                                                            "vllm_api_key_file": "/keys/vllm.key"}), "10.0.0.2")
    jobs = {j["job_name"]: j for j in scrape_jobs(hosts, monitor_host(hosts))}
    [name] = [n for n in jobs if n.startswith("vllm-file-")]
    assert jobs[name]["static_configs"][0]["targets"] == ["10.0.0.2:8000"]
    assert jobs[name]["authorization"]["credentials_file"].startswith("r1-api-key-file-")
    assert "vllm.key" not in name
    # issue 24 item 4: the job dashboards and alerts select is job="vllm", on every vLLM target
    assert jobs[name]["static_configs"][0]["labels"]["job"] == "vllm"


def test_issue24_item4_a_lone_vllm_job_is_named_vllm_whatever_its_key():
    """issue 24 item 4: one key for the whole fleet (here a key file): the job is `vllm`, not a hash."""
    key = {"vllm_api_key_file": "/keys/vllm.key"}
    hosts = [FleetHost(n, spec_from_host_data(n, {**BASE, "vllm_host_ip": a, **data}), a) for n, a, data in [
        ("gpu1", "10.0.0.1", key), ("gpu2", "10.0.0.2", key), ("gw", "10.0.0.9", {"fleet_role": "gateway"})]]
    vllm_jobs = [j for j in scrape_jobs(hosts, monitor_host(hosts)) if j["job_name"].startswith("vllm")]
    assert [j["job_name"] for j in vllm_jobs] == ["vllm"]
    assert vllm_jobs[0]["authorization"]["credentials_file"].startswith("r1-api-key-file-")


def test_retention_and_bind_addresses_come_from_the_spec():
    mon = monitor_host(fleet(monitor_retention_days=30, monitor_retention_size_gib=200))
    args = prometheus_args(mon)
    assert "--storage.tsdb.retention.time=30d" in args and "--storage.tsdb.retention.size=200GB" in args
    assert "--web.listen-address=10.0.0.9:9090" in args
    assert node_exporter_args(fleet()[0].spec) == ("--web.listen-address=10.0.0.1:9100 "
                                                   "--collector.textfile.directory=/var/lib/prometheus/node-exporter")
    unit = render_dcgm_exporter(fleet()[0].spec)["/etc/systemd/system/r1-dcgm-exporter.service"]
    assert "--address 10.0.0.1:9400 --collectors /etc/dcgm-exporter/r1-counters.csv" in unit


@needs_promtool
def test_promtool_accepts_the_rendered_config_and_rules(tmp_path):
    d = write_rendered(tmp_path, fleet())
    config = promtool("check", "config", "prometheus.yml", cwd=d)
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", "r1-alerts.rules.yml", cwd=d)
    assert rules.returncode == 0 and "SUCCESS: 18 rules found" in rules.stdout, rules.stdout + rules.stderr


@needs_promtool
def test_the_drift_textfile_is_valid_exposition_format(tmp_path):
    from r1deploy.drift.runs import Finding, textfile

    text = textfile({"started_ts": 1.0}, [Finding("node1", "service", True, "")])
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert lint.returncode == 0, lint.stdout + lint.stderr


ALERT_TESTS = """
rule_files: [r1-alerts.rules.yml]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - series: 'up{job="vllm",node="gpu2",model="DeepSeek-R1",instance="10.0.0.2:8000"}'
        values: '1 1 1 1 0 0 0 0 0 0 0 0'
      - series: 'vllm:num_requests_running{job="vllm",node="gpu2",model="DeepSeek-R1",model_name="DeepSeek-R1",instance="10.0.0.2:8000"}'
        values: '0 0 0 0'
    alert_rule_test:
      - {eval_time: 1m15s, alertname: R1VllmDown, exp_alerts: []}   # down 15 s: pending, not firing
      - eval_time: 2m
        alertname: R1VllmDown
        exp_alerts:
          - exp_labels: {severity: page, job: vllm, node: gpu2, model: DeepSeek-R1, instance: "10.0.0.2:8000"}
            exp_annotations: {summary: "gpu2: vLLM /metrics not answering"}
  - interval: 1m
    input_series:
      - series: 'up{job="vllm",node="gpu1",model="DeepSeek-R1",instance="a:8000"}'
        values: '1x10'
      - series: 'vllm:num_requests_running{job="vllm",node="gpu1",model="DeepSeek-R1",model_name="other-model",instance="a:8000"}'
        values: '0x10'
      - series: 'up{job="vllm",node="gpu2",model="DeepSeek-R1",instance="b:8000"}'
        values: '1x10'
      - series: 'vllm:num_requests_running{job="vllm",node="gpu2",model="DeepSeek-R1",model_name="DeepSeek-R1",instance="b:8000"}'
        values: '0x10'
    alert_rule_test:
      - eval_time: 6m
        alertname: R1VllmWrongModel
        exp_alerts:
          - exp_labels: {severity: page, job: vllm, node: gpu1, model: DeepSeek-R1, instance: "a:8000"}
            exp_annotations: {summary: "gpu1: vLLM answers but does not serve DeepSeek-R1"}
  - interval: 1m
    input_series:
      # every request takes 5 s to its first token: p99 far above the 2 s SLO
      - series: 'vllm:time_to_first_token_seconds_bucket{node="gpu1",le="1"}'
        values: '0x20'
      - series: 'vllm:time_to_first_token_seconds_bucket{node="gpu1",le="10"}'
        values: '0+60x20'
      - series: 'vllm:time_to_first_token_seconds_bucket{node="gpu1",le="+Inf"}'
        values: '0+60x20'
      - series: 'DCGM_FI_DEV_GPU_TEMP{node="gpu1",gpu="0"}'
        values: '40x20'
      - series: 'r1deploy_drift_check{host="node2",check="service"}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 16m
        alertname: R1TtftP99AboveSlo
        exp_alerts:
          - exp_labels: {severity: page, node: gpu1}
            exp_annotations: {summary: "gpu1: TTFT p99 9.91s above the SLO 2.0s"}
      - eval_time: 10m
        alertname: R1GpuCountBelowExpected
        exp_alerts:
          - exp_labels: {severity: page, node: gpu1}
            exp_annotations: {summary: "gpu1: 1 GPUs report, 8 expected"}
      - eval_time: 1m
        alertname: R1DriftFound
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations: {summary: "drift check: 1 check(s) drifted; run `r1deploy drift` for the table"}
"""


@needs_promtool
def test_alerts_fire_after_their_for_and_not_before(tmp_path):
    d = write_rendered(tmp_path, fleet())
    (d / "tests.yml").write_text(textwrap.dedent(ALERT_TESTS))
    ran = promtool("test", "rules", "tests.yml", cwd=d)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "SUCCESS" in ran.stdout


def test_config_is_plain_yaml_with_json_labels():
    text = render_prometheus_config(fleet(), monitor_host(fleet()))
    line = next(ln for ln in text.splitlines() if '"gpu2"' in ln)
    assert json.loads(line.split("labels: ", 1)[1]) == {"node": "gpu2", "role": "node"}


def test_a_monitor_host_not_in_the_inventory_fails_before_connecting(tmp_path):
    inv = tmp_path / "inv.py"
    inv.write_text(textwrap.dedent(f"""\
        hosts = [("gpu-1.example", {{"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": "{'a' * 40}",
                                     "monitor_host": "ops-1.example"}}),
                 ("gw-1.example", {{"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": "{'a' * 40}",
                                    "fleet_role": "gateway"}})]
    """))
    from r1deploy.fleet.inventory import load_specs

    with pytest.raises(SpecError, match="host 'gpu-1.example': monitor_host: 'ops-1.example' is not a host"):
        load_specs(str(inv), cwd=str(tmp_path))
