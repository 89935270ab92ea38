"""Scheduled drift check: read-only, changes nothing, one JSON report per host.

    pyinfra -y inventories/prod.py deploy/drift.py && r1deploy drift reports/

Per node: the published weights still verify against their manifest (size + mtime), the live
release is the one the spec renders today, the service runs and answers with the served name,
and (GPU hosts) the verification gate passes. Gateways: the router answers. Reports land in
R1DEPLOY_REPORTS (default ./reports); `r1deploy drift` prints them and exits 0/1/2.
"""

import os

from pyinfra import host
from pyinfra.facts.files import Link
from pyinfra.facts.systemd import SystemdStatus

from r1deploy.drift import Finding, write_host
from r1deploy.edge import AUTH_HEADER, engine_local_url, router_admin
from r1deploy.render import CONFIG_DIR, ROUTER_SERVICE, SERVICE, agent_venv, render_node
from roles._fleet import address
from roles._plan import host_plan
from roles._spec import host_spec
from roles.serve.facts import ServingHealth
from roles.weights.facts import PublishedModel

spec = host_spec()
findings: list[Finding] = []


def note(check: str, ok: bool | None, detail: str) -> None:
    findings.append(Finding(host.name, check, ok, detail))


def check_service(unit: str, url: str) -> None:
    running = (host.get_fact(SystemdStatus, services=[unit]) or {}).get(unit)
    note("service", bool(running), f"{unit} {'running' if running else 'not running'}")
    health = host.get_fact(ServingHealth, url=url, auth_header=AUTH_HEADER)
    served = spec.model.name in health["models"]
    note("answers", health["healthy"] and served,
         f"/health {'ok' if health['healthy'] else 'down'}; serves {health['models']}")


if spec.fleet.role == "node":
    venv = agent_venv(spec)
    weights = host.get_fact(PublishedModel, agent_python=f"{venv}/bin/python", agent_src=f"{venv}/src",
                            root=spec.model.root, repo_id=spec.model.repo_id) or {}
    if not weights:
        note("weights", None, "host agent not installed")
    else:
        ok = weights.get("commit") == spec.model.revision and bool(weights.get("verified"))
        note("weights", ok, f"current={str(weights.get('commit'))[:12]} want={spec.model.revision[:12]} "
                            f"verified={weights.get('verified')} {'; '.join(weights.get('problems', []))}".strip())
    plan = host_plan(spec)
    planned = plan.engine_args() if plan and plan.fits else None
    want = render_node(spec, host.name, address(host), planned).release
    live = ((host.get_fact(Link, path=f"{CONFIG_DIR}/current") or {}).get("link_target") or "").rsplit("/", 1)[-1]
    note("release", live == want, f"live={live or 'none'} spec={want}")
    check_service(SERVICE, engine_local_url(spec, address(host)))
    if spec.gpu.manage and spec.vllm.device == "cuda":
        from r1deploy.gpu_gate import Expectations, Observation, run_gate
        from roles.gpu_host import facts as gpu_facts

        obs = Observation(*(host.get_fact(f) for f in (
            gpu_facts.Gpus, gpu_facts.LoadedDriver, gpu_facts.GpuHealth, gpu_facts.NvSwitches,
            gpu_facts.FabricManagerState, gpu_facts.NvLinkStatus)), None)
        for c in run_gate(host.name, obs, Expectations.from_spec(spec.gpu)):
            note(f"gpu:{c.check}", c.ok, c.detail)
else:
    check_service(ROUTER_SERVICE, router_admin(spec))

path = write_host(os.environ.get("R1DEPLOY_REPORTS", "reports"), host.name, findings)
host.log(f"drift report: {path}")
