"""The whole inventory, validated before any host is touched.

Every host's spec (r1deploy/spec.py) plus what only the fleet as a whole shows: a host whose
groups disagree (two model groups), ports that collide on one machine, two nodes or two gateways
on one machine, gateways whose backends do not exist or serve another model, seeds that are not
nodes of the same model, incomplete multi-node groups, hardware the spec cannot run on
(r1deploy/planner/hardware.py), connection settings pyinfra would only trip over when
connecting, and secrets the controller cannot resolve.
Every problem names the host and the key the operator wrote.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from r1deploy import spec_strings as strings
from r1deploy.fleet.rollout import fleet_address, node_url, worker_node
from r1deploy.planner.hardware import hardware_problems
from r1deploy.spec import FieldError, Spec, SpecError, spec_from_host_data

Problem = tuple[str, str]  # (inventory key, reason)


@dataclass(frozen=True)
class HostEntry:
    """One inventory host as pyinfra sees it: merged data, its own data, and each group's data."""

    name: str
    data: Mapping[str, Any]
    host_data: Mapping[str, Any] = field(default_factory=dict)
    # The groups whose data may disagree: without "all" and the inventory file's own group.
    groups: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def machine(self) -> tuple[str, str]:
        """Where pyinfra connects: inventory hosts with the same address and port are one machine."""
        return str(self.data.get("ssh_hostname") or self.name), str(self.data.get("ssh_port") or 22)


# --------------------------------------------------------------------------- one host, before its spec

LAX_HOST_KEYS = {"accept-new", "no", "off", "false", False}


def group_conflicts(entry: HostEntry) -> Iterator[Problem]:
    """pyinfra gives no precedence between two groups of one host: keys two groups set differently
    (a host in two model groups) silently take one group's value. One problem per pair of groups."""
    groups = list(entry.groups.items())
    for i, (first, a) in enumerate(groups):
        for second, b in groups[i + 1:]:
            keys = [k for k in a if k in b and not k.startswith("_") and k not in entry.host_data
                    and repr(a[k]) != repr(b[k])]
            if not keys:
                continue
            keys.sort(key=lambda k: (not k.startswith("model_"), k != "model_repo_id"))
            key = keys[0]
            yield key, (f"groups {first!r} ({a[key]!r}) and {second!r} ({b[key]!r}) set it differently"
                        + (f" (and {', '.join(keys[1:])})" if keys[1:] else "")
                        + "; pyinfra picks one silently: list the host in one of them (one model per host)")


def connection_problems(entry: HostEntry, controller_files: bool = True) -> Iterator[Problem]:
    """pyinfra's own ssh_* keys, which it would only trip over once connecting. `controller_files`:
    also the key and known_hosts files it names (as secrets, only where the run needs them)."""
    data = entry.data
    port = data.get("ssh_port")
    if port is not None and (isinstance(port, bool) or not str(port).isdigit() or not 1 <= int(port) <= 65535):
        yield "ssh_port", f"{port!r} is not a TCP port (1-65535)"
    hostname = data.get("ssh_hostname")
    if hostname is not None:
        problem = strings.hostname_problem(str(hostname))
        if problem:
            yield "ssh_hostname", problem
    user = data.get("ssh_user")
    if user is not None and not strings.LOGIN_USER.match(str(user)):
        yield "ssh_user", f"{user!r} is not a valid user name"
    checking = data.get("ssh_strict_host_key_checking")
    if isinstance(checking, str):
        checking = checking.lower()
    if checking in LAX_HOST_KEYS and data.get("fleet_env", "prod") != "lab":
        yield "ssh_strict_host_key_checking", (
            f"{data['ssh_strict_host_key_checking']!r} accepts unknown host keys: only fleet_env = \"lab\" may; "
            "give the hosts' keys in ssh_known_hosts_file (deploy/bootstrap.py pins a new host's key)")
    # With lax checking ssh creates the known_hosts file; with strict checking it must be there.
    files = ("ssh_key", "ssh_known_hosts_file") if checking not in LAX_HOST_KEYS else ("ssh_key",)
    for key in files if controller_files else ():
        path = data.get(key)
        if isinstance(path, str) and not os.path.isfile(os.path.expanduser(path)):
            yield key, f"{path!r} does not exist on the controller"


# --------------------------------------------------------------------------- secrets on the controller


def secret_problems(spec: Spec, environ: Mapping[str, str]) -> Iterator[Problem]:
    refs = [("vllm_api_key_env", spec.vllm.api_key_env)]
    if spec.fleet.role == "node":  # gateways pull no weights
        refs.insert(0, ("model_hub_token_env", spec.model.hub_token_env))
        if spec.model.hub_token_file:
            problem = token_file_problem(spec.model.hub_token_file)
            if problem:
                yield "model_hub_token_file", problem
    for key, name in refs:
        if name and not environ.get(name):
            yield key, f"${name} is not set in the controller's environment (export it before deploying)"
    files = [("vllm_api_key_file", spec.vllm.api_key_file)]
    if spec.fleet.role == "gateway":
        yield from _edge_problems(spec, environ)
        files.append(("gateway_tls_key_file", spec.gateway.tls_key_file))
    for key, path in files:
        problem = path and token_file_problem(path)
        if problem:
            yield key, problem


def _edge_problems(spec: Spec, environ: Mapping[str, str]) -> Iterator[Problem]:
    """The gateway's client keys ('env:VAR' / 'file:PATH') and TLS certificate, on the controller."""
    for name, ref in spec.gateway.api_keys.items():
        kind, _, value = ref.partition(":")
        key = f"gateway_api_keys[{name!r}]"
        if kind == "env" and not environ.get(value):
            yield key, f"${value} is not set in the controller's environment (export it before deploying)"
        elif kind == "file" and (problem := token_file_problem(value)):
            yield key, problem
    cert = spec.gateway.tls_cert_file
    if cert and not os.path.isfile(os.path.expanduser(cert)):
        yield "gateway_tls_cert_file", f"{cert!r} does not exist on the controller"


def token_file_problem(path: str) -> str | None:
    full = os.path.expanduser(path)
    try:
        st = os.stat(full)
    except OSError as exc:
        return f"{path!r} cannot be read on the controller ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return f"{path!r} is not a regular file"
    if st.st_mode & 0o077:
        return f"{path!r} is mode {stat.S_IMODE(st.st_mode):04o}: others may read the token; chmod 600 it"
    if st.st_size == 0:
        return f"{path!r} is empty"
    return None


# --------------------------------------------------------------------------- across hosts


def _addresses(entry: HostEntry, spec: Spec) -> set[str]:
    return {a for a in (spec.vllm.host_ip, entry.data.get("ssh_hostname"), entry.name) if a}


def _services(entry: HostEntry, spec: Spec) -> list[tuple[str, int]]:
    """(key, port) of every listener this host runs, SSH included."""
    ssh = entry.data.get("ssh_port") or 22
    out = [("ssh_port", int(ssh))] if str(ssh).isdigit() else []
    if spec.fleet.role == "gateway":
        return out + [("gateway_port", spec.gateway.port), ("gateway_router_port", spec.gateway.router_port),
                      ("gateway_prometheus_port", spec.gateway.prometheus_port),
                      ("gateway_router_green_port", spec.gateway.router_green_port),
                      ("gateway_prometheus_green_port", spec.gateway.prometheus_green_port)]
    out.append(("vllm_port", spec.vllm.port))
    if spec.vllm.pd_role != "both":  # NIXL's handshake (r1deploy/serving/pd.py)
        out.append(("vllm_kv_side_channel_port", spec.vllm.kv_side_channel_port))
    if entry.name in spec.model.seed_nodes:
        out.append(("model_seed_port", spec.model.seed_port))
    return out


def port_problems(hosts: list[tuple[HostEntry, Spec]]) -> Iterator[tuple[str, str, str]]:
    """Ports unique per machine (inventory hosts with one SSH address share its ports)."""
    taken: dict[tuple[str, int], tuple[str, str]] = {}
    for entry, spec in hosts:
        services = sorted(_services(entry, spec), key=lambda s: s[0] in entry.data)  # written keys last
        for key, port in services:
            other = taken.get((entry.machine, port))
            if other is not None and other[1] == key == "ssh_port":
                continue  # inventory hosts on one machine (a gateway beside a node) share its SSH
            if other is None:
                taken[(entry.machine, port)] = (entry.name, key)
                continue
            where = "on this host" if other[0] == entry.name else f"of host {other[0]!r} on the same machine"
            yield entry.name, key, f"port {port} is also {other[1]} {where}"


def address_problems(hosts: list[tuple[HostEntry, Spec]]) -> Iterator[tuple[str, str, str]]:
    seen: dict[str, HostEntry] = {}
    for entry, spec in hosts:
        ip = spec.vllm.host_ip
        if spec.fleet.role != "node" or not ip:
            continue
        other = seen.setdefault(ip, entry)
        if other is not entry and other.machine != entry.machine:
            yield entry.name, "vllm_host_ip", f"{ip} is also the address of host {other.name!r}"


# What one role installs at fixed paths: a second host of that role on the machine overwrites it.
_FIXED_PATHS = {"node": "r1-vllm.service, /etc/r1deploy/current",
                "gateway": "vllm-router.service, r1-gateway.conf, keys.conf"}


def machine_problems(hosts: list[tuple[HostEntry, Spec]]) -> Iterator[tuple[str, str, str]]:
    """One node and one gateway per machine at most: their units and files have fixed names, so two
    of one role on one machine overwrite each other (a node beside a gateway is fine)."""
    seen: dict[tuple[tuple[str, str], str], str] = {}
    for entry, spec in hosts:
        role = spec.fleet.role
        other = seen.setdefault((entry.machine, role), entry.name)
        if other != entry.name:
            host, port = entry.machine
            yield entry.name, "ssh_hostname", (
                f"{host}:{port} is also the machine of {role} {other!r}: two {role}s on one machine share "
                f"{_FIXED_PATHS[role]} and overwrite each other; give each {role} a machine of its own")


def _same_model(a: Spec, b: Spec) -> bool:
    return a.model.repo_id == b.model.repo_id and a.model.name == b.model.name


def gateway_problems(hosts: list[tuple[HostEntry, Spec]]) -> Iterator[tuple[str, str, str]]:
    nodes = [(e, s) for e, s in hosts if s.fleet.role == "node"]
    for entry, spec in hosts:
        if spec.fleet.role != "gateway":
            continue
        if spec.gateway.workers is None:
            if not any(_same_model(spec, s) for _, s in nodes):
                yield entry.name, "model_repo_id", (f"no node of this inventory serves {spec.model.name!r} "
                                                    f"({spec.model.repo_id}) for this gateway")
            continue
        named: dict[str, int] = {}
        for i, url in enumerate(spec.gateway.workers):
            key = f"gateway_workers[{i}]"
            found = worker_node(url, [(e.name, s, fleet_address(e.name, e.data)) for e, s in nodes])
            if found is None:
                yield from _worker_problem(entry.name, key, url, nodes)
            elif not _same_model(spec, found[1]):
                yield entry.name, key, (f"{url!r}: node {found[0]!r} serves {found[1].model.repo_id} "
                                        f"({found[1].model.name!r}), this gateway {spec.model.repo_id} "
                                        f"({spec.model.name!r})")
            elif named.setdefault(found[0], i) != i:
                yield entry.name, key, f"{url!r} is node {found[0]!r} again (gateway_workers[{named[found[0]]}])"


def _worker_problem(name: str, key: str, url: str, nodes: list[tuple[HostEntry, Spec]]) -> Iterator[tuple[str, str, str]]:
    """Why an entry names no node: the router would get a URL the drain never removes (issue 21 item 4)."""
    parts = urlsplit(url)
    by_address = [(e, s) for e, s in nodes if parts.hostname in _addresses(e, s)]
    if parts.scheme != "http" or parts.path not in ("", "/") or not 1 <= int(parts.netloc.rpartition(":")[2]) <= 65535:
        yield name, key, f"{url!r}: a node is reached as http://ADDRESS:PORT (vLLM serves plain HTTP, no path)"
    elif not by_address:
        yield name, key, f"{url!r} is not a node of this inventory (no node has address {parts.hostname})"
    elif len(by_address) > 1:
        yield name, key, (f"{url!r}: {parts.hostname} is the address of nodes "
                          f"{', '.join(repr(e.name) for e, _ in by_address)}: name one by its vllm_host_ip or inventory name")
    elif by_address[0][1].vllm.port != parts.port:
        node, node_spec = by_address[0]
        yield name, key, f"{url!r}: node {node.name!r} serves on port {node_spec.vllm.port}, not {parts.port}"
    else:
        node, node_spec = by_address[0]
        yield name, key, (f"{url!r} names node {node.name!r} by its SSH address; the gateway reaches it, and "
                          f"drains it, at {node_url(node_spec, fleet_address(node.name, node.data))}: write that")


def seed_problems(hosts: list[tuple[HostEntry, Spec]]) -> Iterator[tuple[str, str, str]]:
    specs = {e.name: s for e, s in hosts}
    for entry, spec in hosts:
        if spec.fleet.role != "node":
            continue
        for seed in spec.model.seed_nodes:
            other = specs.get(seed)
            if other is None:
                why = f"{seed!r} is not a host of this inventory"
            elif other.fleet.role != "node":
                why = f"{seed!r} is a gateway, not a node"
            elif (other.model.repo_id, other.model.revision) != (spec.model.repo_id, spec.model.revision):
                why = (f"{seed!r} serves {other.model.repo_id}@{other.model.revision[:12]}, this host "
                       f"{spec.model.repo_id}@{spec.model.revision[:12]}")
            elif seed not in other.model.seed_nodes:
                why = f"{seed!r} does not list itself in its own model_seed_nodes (it would not pull from upstream)"
            else:
                continue
            yield entry.name, "model_seed_nodes", why


def env_problems(hosts: list[tuple[HostEntry, Spec]]) -> Iterator[tuple[str, str, str]]:
    envs = {s.fleet.env for _, s in hosts}
    if len(envs) > 1:
        for entry, spec in hosts:
            if spec.fleet.env == "lab":
                yield entry.name, "fleet_env", "'lab' (relaxed rules) in an inventory with prod hosts"


CROSS_HOST_RULES = (port_problems, machine_problems, address_problems, gateway_problems, seed_problems, env_problems)


# --------------------------------------------------------------------------- the whole inventory


def validate_inventory(hosts: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Spec]:
    """Validate every host; raise one SpecError naming all bad hosts and fields."""
    specs: dict[str, Spec] = {}
    errors: list[FieldError] = []
    for name, data in hosts:
        try:
            specs[name] = spec_from_host_data(name, data)
        except SpecError as exc:
            errors.extend(exc.errors)
    if errors:
        raise SpecError(errors)
    from r1deploy.fleet.groups import group_errors  # serving groups are checked across hosts
    from r1deploy.fleet.pd_sets import pd_set_errors  # and P/D sets

    if errors := group_errors(specs) + pd_set_errors(specs):
        raise SpecError(errors)
    return specs


def validate_fleet(entries: Iterable[HostEntry], environ: Mapping[str, str] | None = None,
                   check_secrets: bool = True) -> dict[str, Spec]:
    """Every host's spec and every fleet rule; one SpecError listing all problems, or the specs."""
    environ = os.environ if environ is None else environ
    errors: list[FieldError] = []
    hosts: list[tuple[HostEntry, Spec]] = []
    entries = list(entries)
    for entry in entries:
        try:
            spec = spec_from_host_data(entry.name, entry.data)
        except SpecError as exc:
            errors += exc.errors
            spec = None
        errors += [FieldError(entry.name, k, why) for k, why in [*group_conflicts(entry), *connection_problems(entry, check_secrets)]]
        if spec is None:
            continue
        hosts.append((entry, spec))
        problems = hardware_problems(spec, entry.data)
        if check_secrets:
            problems += list(secret_problems(spec, environ))
        errors += [FieldError(entry.name, k, why) for k, why in problems]
    if len(hosts) == len(entries):  # cross-host rules need every host's spec
        from r1deploy.fleet.groups import group_errors  # serving groups: complete, consistent, one per host
        from r1deploy.observe.monitor import monitor_errors  # which host runs Prometheus

        errors += [FieldError(*p) for rule in CROSS_HOST_RULES for p in rule(hosts)]
        errors += monitor_errors([(e.name, e.data) for e, _ in hosts], {e.name: s for e, s in hosts})
        errors += group_errors({e.name: s for e, s in hosts})
        from r1deploy.fleet.pd_sets import pd_gateway_problems, pd_set_errors  # P/D sets and their gateway

        errors += pd_set_errors({e.name: s for e, s in hosts})
        errors += [FieldError(*p) for p in pd_gateway_problems([(e.name, s, fleet_address(e.name, e.data))
                                                               for e, s in hosts])]
        from r1deploy.fleet.firewall import FwHost, firewall_errors

        errors += firewall_errors([FwHost(e.name, e.data, s) for e, s in hosts])
    if errors:  # one problem per host and key: the first (a control character explains the rest)
        first: dict[tuple[str, str], FieldError] = {}
        for e in errors:
            first.setdefault((e.host, e.key), e)
        raise SpecError(first.values())
    return {e.name: s for e, s in hosts}
