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

from r1deploy.fleet.rollout import startup_timeout_s
from r1deploy.serving.edge import router_admin
from r1deploy.serving.render import agent_venv
from r1deploy.serving.smoke import NodeReport, table
from roles._rollout import host_changed, remote
from roles._spec import host_spec
from roles.gateway import wait_router


def run_smoke(spec, url: str) -> tuple[bool, dict]:
    """Real completions from the host itself through the agent; the JSON report lands on the
    controller as reports/smoke-<host>.json."""
    from roles.serve.rollout import key_args

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
    # router on loopback with the nodes' key (the edge's keys are the clients', not ours).
    wait_router(admin, startup_timeout_s)
    ok, _ = run_smoke(host_spec(), admin)
    if not ok:
        raise OperationError(f"smoke test through the gateway failed on {host.name}; report in reports/")


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
