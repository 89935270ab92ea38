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

from r1deploy.groups import is_group_worker
from r1deploy.render import agent_venv
from r1deploy.smoke import NodeReport, table
from roles._rollout import host_changed, remote
from roles._spec import host_spec
from roles.gateway import wait_router


def _smoke(venv: str, url: str, model: str, max_tokens: int, prompt: str, timeout: float,
           require_reasoning: bool, gateway_port: int | None = None, startup_timeout_s: int = 0) -> None:
    if gateway_port:  # ordered after every node's rollout, so the router's workers are up by now
        wait_router(gateway_port, startup_timeout_s)
    argv = [f"{venv}/bin/python", "-m", "r1deploy.smoke", f"{host.name}={url}", "--model", model,
            "--max-tokens", str(max_tokens), "--prompt", prompt, "--timeout", str(timeout), "--json"]
    if not require_reasoning:
        argv.append("--no-reasoning")
    try:
        out = remote(f"PYTHONPATH={venv}/src PYTHONDONTWRITEBYTECODE=1 {shlex.join(argv)}", "smoke test")
    except OperationError as exc:  # exit 1 still prints the JSON report
        out = str(exc).split("\n", 1)[1] if "\n" in str(exc) else str(exc)
    start = out.find("{")
    data = json.loads(out[start:]) if start >= 0 else {"ok": False, "targets": []}
    reports_dir = Path(os.environ.get("R1DEPLOY_REPORTS", "reports"))
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / f"smoke-{host.name}.json").write_text(json.dumps(data, indent=2) + "\n")
    reports = [NodeReport.from_dict(t) for t in data["targets"]]
    host.log("smoke:\n" + table(reports))
    if not data["ok"]:
        raise OperationError(f"smoke test failed on {host.name}; report in {reports_dir}")


@deploy("Smoke")
def smoke() -> None:
    spec = host_spec()
    if is_group_worker(spec, host.name):  # headless, no API: its group is smoke-tested through the head
        return
    port = spec.gateway.port if spec.fleet.role == "gateway" else spec.vllm.port
    python.call(name=f"Smoke test {spec.model.name}", function=_smoke, venv=agent_venv(spec),
                url=f"http://127.0.0.1:{port}", model=spec.model.name, max_tokens=spec.smoke.max_tokens,
                prompt=spec.smoke.prompt, timeout=spec.smoke.timeout_s,
                require_reasoning=spec.smoke.require_reasoning,
                gateway_port=spec.gateway.port if spec.fleet.role == "gateway" else None,
                startup_timeout_s=spec.vllm.startup_timeout_s, _if=host_changed())
