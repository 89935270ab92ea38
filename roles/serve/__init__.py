"""Serve: render the release (engine YAML + env + unit), flip the release pointer, prove it is healthy.

A release is a directory named by the digest of what was rendered; `current` points at the live
one. A rollout is: write the new release, flip `current`, restart, wait for health. If the
new release does not become healthy in time, `current` flips back, the old release is restarted
and the host fails with the new release's journal: a failed rollout rolls back.
"""

import json
import shlex
import time
from io import StringIO

from pyinfra import host
from pyinfra.api import OperationError, deploy
from pyinfra.facts.files import Link
from pyinfra.operations import files, python, systemd

from r1deploy.render import CONFIG_DIR, SERVICE
from roles._group import render_host
from roles._plan import host_plan
from roles._rollout import host_changed, remote, track
from roles._spec import host_spec

CURRENT = f"{CONFIG_DIR}/current"


def _probe(port: int, model: str) -> str | None:
    """None when /health answers and /v1/models lists the served name, else what is wrong."""
    script = (f"curl -fsS -m 5 http://127.0.0.1:{port}/health >/dev/null && "
              f"curl -fsS -m 5 http://127.0.0.1:{port}/v1/models")
    try:
        out = remote(script, "health probe")
    except OperationError:
        return "not answering /health yet"
    try:
        names = [m["id"] for m in json.loads(out)["data"]]
    except (ValueError, KeyError):
        return f"/v1/models answered {out[:200]!r}"
    return None if model in names else f"/v1/models lists {names}, not {model!r}"


def wait_healthy(port: int, model: str, timeout_s: int, unit: str = SERVICE) -> None:
    deadline = time.monotonic() + timeout_s
    last_log = 0.0
    while (problem := _probe(port, model)) is not None:
        if "failed" in remote(f"systemctl is-failed {unit} || true", "unit state"):
            break
        if time.monotonic() > deadline:
            break
        if time.monotonic() - last_log > 30:
            host.log(f"waiting for {unit}: {problem}")
            last_log = time.monotonic()
        time.sleep(3)
    else:
        return
    journal = remote(f"journalctl -u {unit} -n 40 --no-pager -o cat || true", "journal")
    raise OperationError(f"{unit} not healthy after {timeout_s}s ({problem}); last journal lines:\n{journal}")


def _rollout(port: int, model: str, timeout_s: int, release: str, previous: str | None) -> None:
    try:
        wait_healthy(port, model, timeout_s)
    except OperationError as failure:
        if not previous or previous.endswith(release):
            raise
        remote(f"ln -sfn {shlex.quote(previous)} {CURRENT}.rollback && mv -T {CURRENT}.rollback {CURRENT} "
               f"&& systemctl restart {SERVICE}", "rollback")
        try:
            wait_healthy(port, model, timeout_s)
            back = f"rolled back to {previous}, which is serving again"
        except OperationError:
            back = f"rolled back to {previous}, which is NOT healthy either"
        raise OperationError(f"release {release} failed, {back}.\n{failure}") from None


@deploy("Serve")
def serve() -> None:
    spec = host_spec()
    plan = host_plan(spec)  # real GPU facts where the driver answers, else the spec's hardware
    node = render_host(spec, plan)  # with the plan's env and, in a serving group, vLLM's multi-node flags
    release_dir = f"{CONFIG_DIR}/releases/{node.release}"
    previous = (host.get_fact(Link, path=CURRENT) or {}).get("link_target")

    track(files.directory(name=f"Release {node.release}", path=release_dir, mode="755"))
    for name in ("vllm.yaml", "vllm.env"):
        track(files.put(name=f"Release {node.release}: {name}", src=StringIO(node.files[name]),
                        dest=f"{release_dir}/{name}", mode="644"))
    unit = track(files.put(name=f"Unit {SERVICE}", src=StringIO(node.files[SERVICE]),
                           dest=f"/etc/systemd/system/{SERVICE}", mode="644"))
    flip = track(files.link(name=f"Point current at {node.release}", path=CURRENT, target=release_dir))
    systemd.daemon_reload(name="systemd daemon-reload", _if=unit.did_change)
    # Starting a stopped service is a rollout too: it gets the health wait and the smoke test.
    track(systemd.service(name=f"Enable {SERVICE}", service=SERVICE, running=True, enabled=True))
    systemd.service(name=f"Restart {SERVICE} on a new release", service=SERVICE, restarted=True,
                    _if=lambda: flip.did_change() or unit.did_change())
    python.call(name=f"Wait for {spec.model.name} to serve (up to {spec.vllm.startup_timeout_s}s)",
                function=_rollout, port=spec.vllm.port, model=spec.model.name,
                timeout_s=spec.vllm.startup_timeout_s, release=node.release, previous=previous,
                _if=host_changed())
