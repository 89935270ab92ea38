"""Gateway: vllm-router in front of the fleet's nodes."""

from io import StringIO

from pyinfra import host, inventory
from pyinfra.api import DeployError, deploy
from pyinfra.operations import files, systemd

from r1deploy.groups import is_group_worker
from r1deploy.render import ROUTER_SERVICE, render_router_unit, router_venv
from roles._rollout import remote, track
from roles._spec import host_spec
from roles.base import venv_packages


def _workers(spec) -> list[str]:
    if spec.gateway.workers is not None:
        return spec.gateway.workers
    urls = []
    for node in inventory:
        node_spec = host_spec(node)
        if (node_spec.fleet.role == "node" and node_spec.model.name == spec.model.name
                and not is_group_worker(node_spec, node.name)):  # group workers are headless
            addr = node_spec.vllm.host_ip or node.data.get("ssh_hostname") or node.name
            urls.append(f"http://{addr}:{node_spec.vllm.port}")
    if not urls:
        raise DeployError(f"{host.name}: no node serves {spec.model.name!r} for this gateway")
    return urls


def wait_router(port: int, timeout_s: int) -> None:
    """The router answers /health once its workers do (it waits for them at start)."""
    remote(f"for i in $(seq {timeout_s}); do curl -fsS -m 2 http://127.0.0.1:{port}/health >/dev/null "
           f"&& exit 0; sleep 1; done; journalctl -u {ROUTER_SERVICE} -n 20 --no-pager -o cat; exit 1",
           "gateway health")


@deploy("Gateway")
def gateway() -> None:
    spec = host_spec()
    venv = router_venv(spec)
    _, installed = venv_packages(f"Install vllm-router=={spec.install.router_version}", venv,
                                 [f"vllm-router=={spec.install.router_version}"], spec)
    unit = track(files.put(name=f"Unit {ROUTER_SERVICE}", dest=f"/etc/systemd/system/{ROUTER_SERVICE}",
                           src=StringIO(render_router_unit(spec, host.name, _workers(spec))), mode="644"))
    systemd.daemon_reload(name="systemd daemon-reload", _if=unit.did_change)
    track(systemd.service(name=f"Enable {ROUTER_SERVICE}", service=ROUTER_SERVICE, running=True, enabled=True))
    systemd.service(name=f"Restart {ROUTER_SERVICE} on change", service=ROUTER_SERVICE, restarted=True,
                    _if=lambda: unit.did_change() or installed.did_change())
