"""Monitor: the node exporter on every host, the DCGM exporter on GPU nodes, Prometheus on one host.

Prometheus and the node exporter come from the distribution (Debian 12: prometheus 2.42,
prometheus-node-exporter 1.5); their /etc/default files carry r1deploy's flags (retention, bind
address, textfile directory). The DCGM exporter's unit and counters are rendered on every GPU
node; the exporter itself is installed where NVIDIA's repository is configured (`gpu_dcgm`).
What Prometheus scrapes and alerts on is rendered from the whole inventory (r1deploy/observe/monitor.py)
and checked by the host's own promtool before Prometheus restarts on it.
"""

import os
from io import StringIO

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import apt, files, server, systemd
from r1deploy.roles._secret import resolved, secret_file
from r1deploy.roles._spec import host_spec

from r1deploy.observe.monitor import (
    CONFIG_FILE,
    DCGM_SERVICE,
    PROMETHEUS_DIR,
    RULES_FILE,
    FleetHost,
    MonitorError,
    api_key_file,
    defaults_file,
    key_source,
    monitor_host,
    node_exporter_args,
    prometheus_args,
    render_alert_rules,
    render_dcgm_exporter,
    render_prometheus_config,
)
from r1deploy.serving.edge import vllm_api_key

NODE_EXPORTER = "prometheus-node-exporter"


def fleet_hosts() -> list[FleetHost]:
    """Every inventory host with the address its peers reach it on (as the gateway and seeds do)."""
    return [FleetHost.from_data(h.name, h.data.dict(), host_spec(h)) for h in host.inventory]


def _restart_on_change(service: str, changed: list, check: str | None = None) -> None:
    systemd.service(name=f"Enable {service}", service=service, running=True, enabled=True)
    restart = f"{check} && systemctl restart {service}" if check else f"systemctl restart {service}"
    server.shell(name=f"Restart {service} on change", commands=[restart],
                 _if=lambda: any(op.did_change() for op in changed))


def _node_exporter(spec) -> None:
    apt.packages(name="Node exporter (Debian)", packages=[NODE_EXPORTER], no_recommends=True)
    textfiles = files.directory(name=f"Textfile collector {spec.monitor.textfile_dir}",
                                path=spec.monitor.textfile_dir, mode="755")
    defaults = files.put(name=f"/etc/default/{NODE_EXPORTER}", dest=f"/etc/default/{NODE_EXPORTER}", mode="644",
                         src=StringIO(defaults_file(node_exporter_args(spec), "node exporter flags")))
    _restart_on_change(NODE_EXPORTER, [textfiles, defaults])


def _dcgm_exporter(spec) -> None:
    puts = [files.put(name=f"DCGM exporter {os.path.basename(path)}", dest=path, src=StringIO(text), mode="644")
            for path, text in render_dcgm_exporter(spec).items()]
    if not (spec.gpu.manage and spec.gpu.dcgm):  # no NVIDIA repository here: rendered, not run
        return
    apt.packages(name=f"DCGM exporter ({spec.monitor.dcgm_exporter_package})",
                 packages=[spec.monitor.dcgm_exporter_package])
    systemd.daemon_reload(name="systemd daemon-reload (DCGM exporter)", _if=puts[0].did_change)
    _restart_on_change(DCGM_SERVICE, puts)


def _api_keys(hosts: list[FleetHost]) -> list:
    """Each vLLM key's value (vllm_api_key_env/_file) in a file only Prometheus reads (never in the
    config itself)."""
    sources = {key_source(h.spec): h.spec for h in hosts if key_source(h.spec)}
    return [secret_file(name=f"API key for scraping ({source})", content=resolved(lambda s=spec: vllm_api_key(s)),
                        path=f"{PROMETHEUS_DIR}/{api_key_file(source)}", user="prometheus", mode="600")
            for source, spec in sorted(sources.items())]


def _prometheus(hosts: list[FleetHost], me: FleetHost) -> None:
    apt.packages(name="Prometheus (Debian)", packages=["prometheus"], no_recommends=True)
    changed = _api_keys(hosts)
    for name, text in [(CONFIG_FILE, render_prometheus_config(hosts, me)),
                       (RULES_FILE, render_alert_rules(hosts, me))]:
        changed.append(files.put(name=f"Prometheus {name}", dest=f"{PROMETHEUS_DIR}/{name}", src=StringIO(text),
                                 mode="644"))
    changed.append(files.put(name="/etc/default/prometheus", dest="/etc/default/prometheus", mode="644",
                             src=StringIO(defaults_file(prometheus_args(me), "Prometheus flags"))))
    _restart_on_change("prometheus", changed, check=f"promtool check config {PROMETHEUS_DIR}/{CONFIG_FILE}")


@deploy("Monitor")
def monitor() -> None:
    spec = host_spec()
    if not spec.monitor.enable:
        return
    hosts = fleet_hosts()
    try:
        me = monitor_host(hosts)
    except MonitorError as exc:
        raise DeployError(f"{host.name}: {exc}") from None
    _node_exporter(spec)
    if spec.fleet.role == "node" and spec.vllm.device == "cuda":
        _dcgm_exporter(spec)
    if me is not None and me.name == host.name:
        _prometheus(hosts, me)
