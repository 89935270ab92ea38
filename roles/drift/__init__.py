"""Drift: read facts only and compare them with what the spec renders today (r1deploy.drift.checks).

`host_checks(spec, full)` lists (check name, callable) for this host's role; deploy/drift.py
runs each through r1deploy.drift.runs.run_check, so a check that raises is that check's
"could not check", never the end of the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

from pyinfra import host
from pyinfra.facts.files import Link
from r1deploy.roles._fleet import address
from r1deploy.roles._plan import host_plan
from r1deploy.roles.drift import facts as df
from r1deploy.roles.serve.facts import ServingHealth

from r1deploy import AGENT_REQUIREMENTS, __version__
from r1deploy.drift import checks as dc
from r1deploy.drift.runs import Finding
from r1deploy.serving.edge import engine_local_url
from r1deploy.serving.render import (
    CONFIG_DIR,
    SERVICE,
    agent_venv,
    router_venv,
    served_model_dir,
    vllm_venv,
)

UNIT_DIR = "/etc/systemd/system"
MIRROR_SERVICE = "r1-mirror.service"
Check = tuple[str, Callable[[], Iterable[Finding]]]


def _rendered(spec):
    """The node's files exactly as serve renders them now (same plan, env, address, group flags)."""
    from r1deploy.roles._group import render_host

    return render_host(spec, host_plan(spec))


def _group(spec) -> list[Finding]:
    """A serving group's member: `r1deploy drift` folds these into one row per group."""
    from r1deploy.roles._group import host_group

    from r1deploy.drift.groups import member_tag

    return [Finding(host.name, "group", True, member_tag(host_group(spec), host.name))]


def _release(spec) -> list[Finding]:
    node = _rendered(spec)
    live_target = (host.get_fact(Link, path=f"{CONFIG_DIR}/current") or {}).get("link_target")
    paths = {name: f"{CONFIG_DIR}/current/{name}" for name in node.files}
    digests = host.get_fact(df.FileDigests, paths=sorted(paths.values()))
    live = {name: digests.get(path) for name, path in paths.items()}
    return [*dc.release_link(host.name, live_target, node.release),
            *dc.files_match(host.name, "release-files", node.files, live, f"{CONFIG_DIR}/current")]


def _unit(name: str, content: str) -> list[Finding]:
    path = f"{UNIT_DIR}/{name}"
    digests = host.get_fact(df.FileDigests, paths=[path])
    return dc.files_match(host.name, "unit", {name: content}, {name: digests.get(path)}, UNIT_DIR)


def _packages(check: str, venv: str, pins: list[str]) -> list[Finding]:
    return dc.packages_match(host.name, check, venv, pins, host.get_fact(df.DistVersions, venv=venv))


def _service(unit: str) -> list[Finding]:
    enabled, active = host.get_fact(df.UnitStates, units=[unit]).get(unit, (None, None))
    return dc.unit_state(host.name, unit, enabled, active)


def _answers(url: str, name: str) -> list[Finding]:
    """/health and /v1/models (with the nodes' key) where serve and the rollout ask: a node's
    engine on its bind address, a gateway's router on its loopback port."""
    return dc.answers(host.name, host.get_fact(ServingHealth, url=url), name)


def _engine(spec) -> str:
    return engine_local_url(spec, address(host))


def _revision(spec) -> list[Finding]:
    reply = host.get_fact(df.LocalJson, url=f"{_engine(spec)}/v1/models", auth=True)
    if not reply["ok"]:
        return [Finding(host.name, "revision", None, f"/v1/models: {str(reply['body'])[:200]}")]
    return dc.served_revision(host.name, reply["body"], served_model_dir(spec))


def _weights(spec, full: bool) -> list[Finding]:
    venv = agent_venv(spec)
    m = spec.model
    args = (f"verify --full --dir {m.current_link}" if full else f"status --root {m.root} --repo {m.repo_id}")
    status = host.get_fact(df.AgentWeights, agent_python=f"{venv}/bin/python", agent_src=f"{venv}/src", args=args)
    return dc.weights(host.name, status, m.revision, full)


def _agent_version(spec) -> list[Finding]:
    src = f"{agent_venv(spec)}/src"
    return dc.agent_version(host.name, src, host.get_fact(df.AgentVersion, src=src), __version__)


def _gpu(spec) -> list[Finding]:
    """The GPU stage's own gate (deep checks, DCGM, all-reduce as the spec says), read-only."""
    from r1deploy.roles.gpu_host import _allreduce_python, _expectations, _vendor
    from r1deploy.roles.gpu_host.ops import gate_checks

    checks = gate_checks(_expectations(spec.gpu), _vendor(spec.gpu), spec.gpu.simulation, _allreduce_python(spec))
    return [Finding(host.name, f"gpu:{c.check}", c.ok, c.detail) for c in checks]


def _held(spec) -> list[Finding]:
    from r1deploy.roles.gpu_host import facts as gpu_facts

    return dc.held_packages(host.name, host.get_fact(df.AptPins), host.get_fact(gpu_facts.NvidiaPackages),
                            spec.gpu.driver_branch, spec.gpu.driver_version)


def _mirror(spec) -> list[Finding]:
    enabled, active = host.get_fact(df.UnitStates, units=[MIRROR_SERVICE]).get(MIRROR_SERVICE, (None, None))
    m = spec.model
    listing = host.get_fact(df.LocalJson, url=f"http://{address(host)}:{m.seed_port}/api/models/{m.repo_id}/revision/{m.revision}")
    return dc.mirror(host.name, enabled, active, listing["body"], m.revision)


def _live(spec):
    """The router colour nginx routes to (blue/green, r1deploy.fleet.bluegreen), read on the host."""
    from r1deploy.roles.gateway.router import live_on_host

    return live_on_host(spec)


def _router_live(spec) -> list[Finding]:
    """Issue 23 item 4: the live router's process (its argv: policy, port, version) against the spec."""
    from r1deploy.roles.gateway import _routes
    from r1deploy.roles.gateway.facts import RouterArgv

    from r1deploy.fleet.bluegreen import router_drift

    live = _live(spec)
    wrong = router_drift(spec, live, host.get_fact(RouterArgv, service=live.service), pd_mode=bool(_routes(spec)))
    return [Finding(host.name, "router-live", not wrong, "; ".join(wrong) or
                    f"{live.service} ({live.name}) runs --policy {spec.gateway.policy}, "
                    f"vllm-router {spec.install.router_version}")]


def _backends(spec) -> list[Finding]:
    """The router's live workers. In P/D mode /list_workers lists both sides as one list (the router's
    get_worker_urls), so this compares the set's replicas; which side each serves is the start list's."""
    from r1deploy.roles.gateway import _workers

    reply = host.get_fact(df.LocalJson, url=f"{_live(spec).admin}/list_workers")
    if not reply["ok"]:
        return [Finding(host.name, "backends", None, f"/list_workers: {str(reply['body'])[:200]}")]
    return dc.backends_match(host.name, _workers(spec), reply["body"])


def _router_unit(spec) -> list[Finding]:
    """The unit as the gateway stage renders it: in front of a P/D set, in the router's P/D mode."""
    from r1deploy.roles.gateway import _routes

    from r1deploy.serving.render import render_router_unit

    live = _live(spec)
    return _unit(live.service, render_router_unit(spec, host.name, live.name, _routes(spec)))


def _gateway_files(spec) -> list[Finding]:
    """What the gateway stage renders besides the unit: the router's start list and the edge
    (nginx site, API keys, sandbox drop-in), as the spec and the controller's secrets say today."""
    from r1deploy.roles._secret import resolved
    from r1deploy.roles.gateway import _routes, _workers
    from r1deploy.roles.gateway.edge import SANDBOX

    from r1deploy.serving import edge
    from r1deploy.serving.render import ROUTER_WORKERS_ENV, render_router_workers, render_template

    # The start list holds a P/D set's --prefill/--decode lists: its digest is the check of each side.
    want = {ROUTER_WORKERS_ENV: render_router_workers(host.name, _workers(spec), _routes(spec)),
            edge.SITE_CONF: edge.render_site(spec, host.name, bool(spec.gateway.tls_cert_file)),
            edge.KEYS_CONF: edge.render_keys(resolved(lambda: edge.client_keys(spec)),
                                             resolved(lambda: edge.vllm_api_key(spec))),
            SANDBOX: render_template("r1deploy-sandbox.conf.j2", host=host.name)}
    digests = host.get_fact(df.FileDigests, paths=sorted(want))
    return dc.files_match(host.name, "gateway-files", want, digests, "gateway")


def _edge_loaded() -> list[Finding]:
    """The edge files on disk are the ones nginx loaded (roles/gateway/edge.py records each reload)."""
    from r1deploy.roles.gateway.facts import EdgeLoaded

    return dc.edge_loaded(host.name, host.get_fact(EdgeLoaded))


def node_checks(spec, full: bool) -> list[Check]:
    from r1deploy.serving.install_plan import engine_pins

    checks: list[Check] = [
        ("release", partial(_release, spec)),
        ("unit", lambda: _unit(SERVICE, _rendered(spec).files[SERVICE])),
        ("vllm-packages", partial(_packages, "vllm-packages", vllm_venv(spec), engine_pins(spec))),  # nixl on P/D sides
        ("agent-packages", partial(_packages, "agent-packages", agent_venv(spec), AGENT_REQUIREMENTS)),
        ("agent-version", partial(_agent_version, spec)),
        ("service", partial(_service, SERVICE)),
        ("weights", partial(_weights, spec, full)),
    ]
    from r1deploy.fleet.groups import is_group_worker

    if not is_group_worker(spec, host.name):  # a group worker runs vLLM headless: its head answers
        checks[7:7] = [("answers", partial(_answers, _engine(spec), spec.model.name)),
                       ("revision", partial(_revision, spec))]
    if spec.fleet.group:
        checks.append(("group", partial(_group, spec)))
    if spec.gpu.manage and spec.vllm.device == "cuda":
        checks += [("gpu", partial(_gpu, spec)), ("nvidia-packages", partial(_held, spec))]
    if host.name in spec.model.seed_nodes:
        checks.append(("mirror", partial(_mirror, spec)))
    return checks


def gateway_checks(spec) -> list[Check]:
    return [
        ("unit", partial(_router_unit, spec)),
        ("gateway-files", partial(_gateway_files, spec)),
        ("edge-loaded", _edge_loaded),
        ("router-packages", partial(_packages, "router-packages", router_venv(spec),
                                    [f"vllm-router=={spec.install.router_version}"])),
        ("agent-packages", partial(_packages, "agent-packages", agent_venv(spec), AGENT_REQUIREMENTS)),
        ("service", lambda: _service(_live(spec).service)),
        ("router-live", partial(_router_live, spec)),
        ("answers", lambda: _answers(_live(spec).admin, spec.model.name)),
        ("backends", partial(_backends, spec)),
    ]


def host_checks(spec, full: bool) -> list[Check]:
    from r1deploy.roles.drift.intruder import (
        intruder_checks,  # issue 23 item 4: what an intruder would change
    )

    return [*(node_checks(spec, full) if spec.fleet.role == "node" else gateway_checks(spec)), *intruder_checks(spec)]
