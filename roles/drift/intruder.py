"""Drift checks of what an intruder would change (issue 23 item 4), each its own named check:
file-modes (every installed secret and rendered file), monitor (Prometheus and the node exporter
enabled and active), monitor-files (Prometheus's config and alert rules as rendered), nginx-live
(`nginx -T` against the render) and firewall (`nft list ruleset` against the confirmed load of
today's render). Comparisons: r1deploy.drift.intruder."""

from __future__ import annotations

import hashlib
from functools import partial

from pyinfra import host
from r1deploy.roles.drift import facts as df

from r1deploy.drift import checks as dc
from r1deploy.drift import intruder as di
from r1deploy.drift.runs import Finding
from r1deploy.serving import edge
from r1deploy.serving.render import CONFIG_DIR, ROUTER_SERVICE, SERVICE

NODE_EXPORTER = "prometheus-node-exporter.service"
PROMETHEUS = "prometheus.service"
ROOT = ("root", "root")


def _has_key(spec) -> bool:
    return bool(spec.vllm.api_key_env or spec.vllm.api_key_file)


def _monitor_me():
    """This host's FleetHost when it runs Prometheus, else None."""
    from r1deploy.roles.monitor import fleet_hosts

    from r1deploy.observe.monitor import monitor_host

    hosts = fleet_hosts()
    me = monitor_host(hosts)
    return (hosts, me) if me is not None and me.name == host.name else (hosts, None)


def expected_modes(spec) -> dict[str, di.Mode]:
    """(owner, group, mode) of each file the converge installs on this host, as the roles give them."""
    want: dict[str, di.Mode] = {}
    if _has_key(spec):
        want[edge.AUTH_HEADER] = (*ROOT, "600")
    if spec.fleet.role == "node":
        from r1deploy.roles.drift import _rendered

        if _has_key(spec):
            want[edge.SECRET_ENV] = (*ROOT, "600")
        want[f"/etc/systemd/system/{SERVICE}"] = (*ROOT, "644")
        want.update({f"{CONFIG_DIR}/current/{name}": (*ROOT, "644") for name in _rendered(spec).files})
    else:
        from r1deploy.roles.gateway.edge import NGINX_GROUP

        want.update({edge.KEYS_CONF: ("root", NGINX_GROUP, "640"), edge.SITE_CONF: (*ROOT, "644"),
                     edge.ROUTER_UPSTREAM: (*ROOT, "644"), f"/etc/systemd/system/{ROUTER_SERVICE}": (*ROOT, "644")})
        if spec.gateway.tls_key_file:
            want[edge.TLS_KEY] = ("root", NGINX_GROUP, "640")
        if spec.gateway.api_keys:
            want[edge.EDGE_SMOKE_HEADER] = (*ROOT, "600")
    if spec.fleet.firewall_on:
        from r1deploy.fleet.firewall import CONF

        want[CONF] = (*ROOT, "644")
    if spec.monitor.enable:
        want.update(_prometheus_modes())
    return want


def _prometheus_modes() -> dict[str, di.Mode]:
    from r1deploy.observe.monitor import CONFIG_FILE, PROMETHEUS_DIR, RULES_FILE, api_key_file, key_source

    hosts, me = _monitor_me()
    if me is None:
        return {}
    want = {f"{PROMETHEUS_DIR}/{name}": (*ROOT, "644") for name in (CONFIG_FILE, RULES_FILE)}
    for source in sorted({key_source(h.spec) for h in hosts if key_source(h.spec)}):
        want[f"{PROMETHEUS_DIR}/{api_key_file(source)}"] = ("prometheus", "prometheus", "600")
    return want


def _file_modes(spec) -> list[Finding]:
    want = expected_modes(spec)
    return di.file_modes(host.name, want, host.get_fact(df.FileModes, paths=sorted(want)))


def _monitor() -> list[Finding]:
    _, me = _monitor_me()
    units = [NODE_EXPORTER, *([PROMETHEUS] if me is not None else [])]
    return di.units_running(host.name, "monitor", host.get_fact(df.UnitStates, units=units))


def _monitor_files() -> list[Finding]:
    from r1deploy.observe.monitor import (
        CONFIG_FILE,
        PROMETHEUS_DIR,
        RULES_FILE,
        render_alert_rules,
        render_prometheus_config,
    )

    hosts, me = _monitor_me()
    want = {f"{PROMETHEUS_DIR}/{CONFIG_FILE}": render_prometheus_config(hosts, me),
            f"{PROMETHEUS_DIR}/{RULES_FILE}": render_alert_rules(hosts, me)}
    return dc.files_match(host.name, "monitor-files", want, host.get_fact(df.FileDigests, paths=sorted(want)),
                          PROMETHEUS_DIR)


def _nginx_live(spec) -> list[Finding]:
    from r1deploy.roles._secret import resolved
    from r1deploy.roles.gateway.router import live_on_host

    from r1deploy.fleet.bluegreen import render_upstream

    want = {edge.SITE_CONF: edge.render_site(spec, host.name, bool(spec.gateway.tls_cert_file)),
            edge.KEYS_CONF: edge.render_keys(resolved(lambda: edge.client_keys(spec)),
                                             resolved(lambda: edge.vllm_api_key(spec))),
            # The router colour nginx routes to (blue/green): exactly one colour's render, never another port.
            edge.ROUTER_UPSTREAM: render_upstream(live_on_host(spec))}
    live = host.get_fact(df.NginxDigests)
    return di.nginx_live(host.name, want, live["digests"], live["error"])


def _firewall() -> list[Finding]:
    from r1deploy.roles.firewall import rendered
    from r1deploy.roles.firewall.facts import FirewallState, NftRuleset

    state = host.get_fact(FirewallState)
    want_sha = hashlib.sha256(rendered().encode()).hexdigest()
    return di.firewall_live(host.name, host.get_fact(NftRuleset), state.get("loaded"), state.get("render_sha"), want_sha)


def intruder_checks(spec) -> list[tuple[str, object]]:
    checks: list[tuple[str, object]] = [("file-modes", partial(_file_modes, spec))]
    if spec.monitor.enable:
        checks.append(("monitor", _monitor))
        if _monitor_me()[1] is not None:
            checks.append(("monitor-files", _monitor_files))
    if spec.fleet.role == "gateway":
        checks.append(("nginx-live", partial(_nginx_live, spec)))
    if spec.fleet.firewall_on:
        checks.append(("firewall", _firewall))
    return checks
