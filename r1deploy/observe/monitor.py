"""What the fleet's Prometheus scrapes and pages on, rendered from the inventory. Pure: no I/O to hosts.

One monitor host (`monitor_host`, default the first gateway) runs Prometheus from the
distribution; every host runs the node exporter, GPU nodes the DCGM exporter. The scrape config
and the alert rules are functions of the validated specs of every host, so a new node is scraped
and alerted on after the next converge. Every target carries a `node` (or `gateway`) label with
its inventory name: alerts and dashboards speak in host names, not addresses.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from r1deploy.serving.render import render_template
from r1deploy.spec import FieldError, Spec

PROMETHEUS_DIR = "/etc/prometheus"
CONFIG_FILE = "prometheus.yml"
RULES_FILE = "r1-alerts.rules.yml"
DRIFT_TEXTFILE = "r1-drift.prom"
DCGM_COUNTERS = "/etc/dcgm-exporter/r1-counters.csv"
DCGM_SERVICE = "r1-dcgm-exporter.service"


class MonitorError(ValueError):
    """An inventory whose monitoring cannot be rendered (names the key to fix)."""


@dataclass(frozen=True)
class FleetHost:
    """One inventory host as the monitor sees it: its name, spec and the address peers reach it on."""

    name: str
    spec: Spec
    address: str

    @classmethod
    def from_data(cls, name: str, data: Mapping, spec: Spec) -> FleetHost:
        """Peers reach a host on its serving address, else its SSH address (as the gateway does)."""
        return cls(name, spec, data.get("vllm_host_ip") or data.get("ssh_hostname") or name)

    @property
    def role(self) -> str:
        return self.spec.fleet.role

    @property
    def gpu(self) -> bool:
        return self.spec.vllm.device == "cuda"


def monitor_host(hosts: Iterable[FleetHost]) -> FleetHost | None:
    """The host that runs Prometheus: `monitor_host` where set, else the first gateway; None: none."""
    hosts = list(hosts)
    if not hosts or not hosts[0].spec.monitor.enable:
        return None
    named = {h.spec.monitor.host for h in hosts if h.spec.monitor.host}
    if len(named) > 1:
        raise MonitorError(f"monitor_host: hosts disagree ({', '.join(sorted(named))}); set it once for all")
    if named:
        name = named.pop()
        found = [h for h in hosts if h.name == name]
        if not found:
            raise MonitorError(f"monitor_host: {name!r} is not a host of this inventory")
        return found[0]
    gateways = [h for h in hosts if h.role == "gateway"]
    return gateways[0] if gateways else None  # nodes only (a GPU-only run): exporters, no Prometheus


def monitor_errors(rows: Iterable[tuple[str, Mapping]], specs: Mapping[str, Spec]) -> list[FieldError]:
    """The inventory-wide check of `monitor_host`, as a spec error naming the host that set it."""
    rows = list(rows)
    try:
        monitor_host([FleetHost.from_data(name, data, specs[name]) for name, data in rows])
    except MonitorError as exc:
        setter = next((n for n, _ in rows if specs[n].monitor.host), rows[0][0] if rows else "?")
        return [FieldError(setter, "monitor_host", str(exc).removeprefix("monitor_host: "))]
    return []


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def api_key_file(env_name: str) -> str:
    """The file (in PROMETHEUS_DIR; Prometheus resolves it beside its config) with one key's value."""
    return f"r1-api-key-{env_name.lower()}"


def key_source(spec: Spec) -> str | None:
    """Which vLLM key a node requires, as a name for its scrape job and credentials file: the env
    var's name, or for vllm_api_key_file one derived from the path (never the key)."""
    v = spec.vllm
    if v.api_key_file:
        return "file-" + hashlib.sha256(v.api_key_file.encode()).hexdigest()[:8]
    return v.api_key_env


def _target(address: str, port: int, **labels: str) -> dict:
    return {"targets": [_hostport(address, port)], "labels": labels}


def scrape_jobs(hosts: Iterable[FleetHost], monitor: FleetHost) -> list[dict]:
    """Prometheus scrape jobs: node exporter everywhere, vLLM per node, routers, DCGM on GPU nodes."""
    hosts = list(hosts)
    nodes = [h for h in hosts if h.role == "node"]
    m = monitor.spec.monitor
    # Prometheus listens where prometheus_args binds it: the fleet address when there is one.
    jobs = [{"job_name": "prometheus", "static_configs": [
                _target(monitor.spec.vllm.host_ip or "127.0.0.1", m.port, node=monitor.name)]},
            {"job_name": "node", "static_configs": [
                _target(h.address, h.spec.monitor.node_exporter_port, node=h.name, role=h.role) for h in hosts]}]
    # One job per API key: Prometheus sends a job's credentials to every target of it.
    by_key: dict[str | None, list[FleetHost]] = {}
    for h in nodes:
        by_key.setdefault(key_source(h.spec), []).append(h)
    # Dashboards and alerts select job="vllm": a lone job is named so, and the targets of the others
    # (names must differ) carry job="vllm" (Prometheus keeps a target's own job label; issue 24 item 4).
    for key_env, group in sorted(by_key.items(), key=lambda kv: kv[0] or ""):
        name = "vllm" if key_env is None or len(by_key) == 1 else f"vllm-{key_env.lower()}"
        labels = {} if name == "vllm" else {"job": "vllm"}
        job = {"job_name": name,
               "static_configs": [_target(h.address, h.spec.vllm.port, node=h.name, model=h.spec.model.name,
                                          **labels) for h in group]}
        if key_env:
            job["authorization"] = {"type": "Bearer", "credentials_file": api_key_file(key_env)}
        jobs.append(job)
    # The router binds its metrics port to loopback: reachable only from Prometheus on the same host.
    # Both colours (blue/green, r1deploy.fleet.bluegreen): the live one answers, the standby is down
    # by design (R1RouterDown fires when no colour of a gateway answers).
    gateways = [h for h in hosts if h.role == "gateway"]
    if gateways:
        jobs.append({"job_name": "router", "static_configs": [
            _target("127.0.0.1" if h.name == monitor.name else h.address, port, gateway=h.name, colour=colour)
            for h in gateways for colour, port in (("blue", h.spec.gateway.prometheus_port),
                                                   ("green", h.spec.gateway.prometheus_green_port))]})
    gpu_nodes = [h for h in nodes if h.gpu]
    if gpu_nodes:
        jobs.append({"job_name": "dcgm", "static_configs": [
            _target(h.address, h.spec.monitor.dcgm_exporter_port, node=h.name) for h in gpu_nodes]})
    return jobs


def render_prometheus_config(hosts: Iterable[FleetHost], monitor: FleetHost) -> str:
    hosts = list(hosts)
    return render_template(f"{CONFIG_FILE}.j2", monitor=monitor, jobs=scrape_jobs(hosts, monitor),
                           rules_file=RULES_FILE)


def expected_gpus(spec: Spec) -> int | None:
    return spec.gpu.expected_count or spec.plan.gpus_per_node


def render_alert_rules(hosts: Iterable[FleetHost], monitor: FleetHost) -> str:
    """The alert rules; thresholds and the SLO come from the monitor host's spec."""
    hosts = list(hosts)
    gpu_counts = {h.name: expected_gpus(h.spec) for h in hosts if h.role == "node" and h.gpu}
    return render_template(f"{RULES_FILE}.j2", m=monitor.spec.monitor,
                           gpu_counts={k: v for k, v in gpu_counts.items() if v})


def bind_address(spec: Spec, port: int) -> str:
    """Exporters listen on the host's fleet address where the inventory names one, else everywhere."""
    ip = spec.vllm.host_ip
    return _hostport(ip, port) if ip else f":{port}"


def prometheus_args(monitor: FleetHost) -> str:
    m = monitor.spec.monitor
    args = [f"--config.file={PROMETHEUS_DIR}/{CONFIG_FILE}", "--storage.tsdb.path=/var/lib/prometheus/metrics2/",
            f"--storage.tsdb.retention.time={m.retention_days}d",
            f"--web.listen-address={bind_address(monitor.spec, m.port)}"]
    if m.retention_size_gib:
        args.append(f"--storage.tsdb.retention.size={m.retention_size_gib}GB")
    return " ".join(args)


def node_exporter_args(spec: Spec) -> str:
    m = spec.monitor
    return (f"--web.listen-address={bind_address(spec, m.node_exporter_port)} "
            f"--collector.textfile.directory={m.textfile_dir}")


def defaults_file(args: str, what: str) -> str:
    """/etc/default/<service> as Debian's units read it (ARGS=...)."""
    return f"# Rendered by r1deploy: {what}.\nARGS=\"{args}\"\n"


def render_dcgm_exporter(spec: Spec) -> dict[str, str]:
    """The DCGM exporter's unit and counters (path -> content), rendered on every GPU node."""
    m = spec.monitor
    unit = render_template(f"{DCGM_SERVICE}.j2", listen=bind_address(spec, m.dcgm_exporter_port),
                           counters=DCGM_COUNTERS)
    return {f"/etc/systemd/system/{DCGM_SERVICE}": unit,
            DCGM_COUNTERS: render_template("r1-counters.csv.j2")}


# --- the drift check's textfile (node exporter textfile collector) ---

_LABEL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n"}


def _label(value: str) -> str:
    return re.sub(r'[\\"\n]', lambda m: _LABEL_ESCAPES[m.group()], value)


