"""Smoke: real completions on every host that was rolled out; a failing answer fails the rollout.

The checks run on the host itself through the agent (no assumption that the controller can reach
serving ports); each host's JSON report lands on the controller in R1DEPLOY_REPORTS (default
./reports).
"""

import json
import os
import shlex
from pathlib import Path

from pyinfra import host
from pyinfra.api import OperationError, deploy
from pyinfra.operations import python
from r1deploy.roles._rollout import host_changed, remote, wait_router
from r1deploy.roles._secret import key_args
from r1deploy.roles._spec import host_spec

from r1deploy.fleet.rollout import startup_timeout_s
from r1deploy.serving.edge import router_admin
from r1deploy.serving.render import agent_venv
from r1deploy.serving.smoke import NodeReport, table


def run_smoke(spec, url: str) -> tuple[bool, dict]:
    """Real completions from the host itself through the agent; the JSON report lands on the
    controller as reports/smoke-<host>.json."""
    venv = agent_venv(spec)
    argv = [f"{venv}/bin/python", "-m", "r1deploy.serving.smoke", f"{host.name}={url}", "--model", spec.model.name,
            "--max-tokens", str(spec.smoke.max_tokens), "--prompt", spec.smoke.prompt,
            "--timeout", str(spec.smoke.timeout_s), "--json", *key_args(spec)]
    if not spec.smoke.require_reasoning:
        argv.append("--no-reasoning")
    try:
        out = remote(f"PYTHONPATH={venv}/src PYTHONDONTWRITEBYTECODE=1 {shlex.join(argv)}", "smoke test")
    except OperationError as exc:  # exit 1 still prints the JSON report
        out = str(exc).split("\n", 1)[1] if "\n" in str(exc) else str(exc)
    start = out.find("{")
    try:
        data = json.loads(out[start:out.rfind("}") + 1]) if start >= 0 else {"ok": False, "targets": []}
    except ValueError:
        data = {"ok": False, "targets": []}
    reports_dir = Path(os.environ.get("R1DEPLOY_REPORTS", "reports"))
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / f"smoke-{host.name}.json").write_text(json.dumps(data, indent=2) + "\n")
    host.log("smoke:\n" + table([NodeReport.from_dict(t) for t in data["targets"]]))
    return bool(data.get("ok")), data


def _smoke(admin: str, startup_timeout_s: int) -> None:
    # Ordered after every node's rollout, so the router's workers are up by now. Through the
    # router on loopback with the nodes' key, then as a client would: through nginx.
    wait_router(admin, startup_timeout_s)
    spec = host_spec()
    # `admin` reads the live colour's port on the host (blue/green): the agent gets the plain URL.
    ok, _ = run_smoke(spec, remote(f'echo "{admin}"', "live router").strip())
    if not ok:
        raise OperationError(f"smoke test through the gateway failed on {host.name}; report in reports/")
    host.log(f"through nginx: {edge_smoke(spec)}")


def edge_smoke(spec) -> str:
    """Issue 21 item 2: a completion through nginx with a client's key, as users send it, so a node
    that refuses the key nginx sends shows (a 401 from the edge). -k: on loopback the certificate's
    name is the public one; the edge's TLS is the lab's own test."""
    from r1deploy.serving.edge import EDGE_SMOKE_HEADER, edge_local_url

    if not spec.gateway.api_keys:
        return "no client key configured (gateway_api_keys): nginx refuses every client; not checked"
    body = json.dumps({"model": spec.model.name, "max_tokens": 4,
                       "messages": [{"role": "user", "content": "Say hi"}]})
    out = remote(f"curl -sS -k -m {spec.smoke.timeout_s} -o /dev/null -w '%{{http_code}}' -H @{EDGE_SMOKE_HEADER} "
                 f"-H 'Content-Type: application/json' -d {shlex.quote(body)} "
                 f"{edge_local_url(spec)}/v1/chat/completions", "smoke through nginx")
    code = out.strip()[-3:]
    if code != "200":
        raise OperationError(f"smoke through nginx on {host.name} with a client key: HTTP {code} "
                             f"({'the nodes refuse the key nginx sends' if code == '401' else 'see the access log'})")
    return f"a client's completion answered {code}"


@deploy("Smoke")
def smoke() -> None:
    """Through each gateway that changed. Nodes are smoke-tested inside their rollout turn,
    before they rejoin (roles/serve/rollout.py)."""
    spec = host_spec()
    if spec.fleet.role != "gateway":
        return
    python.call(name=f"Smoke test {spec.model.name} through the gateway", function=_smoke,
                admin=router_admin(spec), startup_timeout_s=startup_timeout_s(spec),
                _if=host_changed())
