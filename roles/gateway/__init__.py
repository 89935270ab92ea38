"""Gateway: nginx (the public edge, roles/gateway/edge.py) in front of vllm-router on loopback,
whose rotation is kept equal to the serving nodes.

The router's start list is a file of its own (a new node list restarts nothing). The rollout
(roles/serve) takes nodes out of rotation and puts them back through the router's admin routes;
this stage runs after every batch and reconciles what remains: a configured node
that serves but is not listed (a controller killed mid-rollout left it drained) is added, a
listed URL no node has any more is removed, and a node whose rollout failed stays out.
"""

import json
from io import StringIO

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import files, python
from r1deploy.roles._fleet import fleet_view
from r1deploy.roles._rollout import remote
from r1deploy.roles._secret import engine_key_files
from r1deploy.roles._spec import host_spec
from r1deploy.roles.base import venv_packages
from r1deploy.roles.gateway.edge import nginx_edge
from r1deploy.roles.gateway.router import restart_in_place, router_plan, router_stage
from r1deploy.roles.serve.facts import RouterWorkers
from r1deploy.roles.serve.rollout import ROLLOUT

from r1deploy.fleet.rollout import gateway_workers, reconcile_wanted
from r1deploy.serving.edge import router_admin
from r1deploy.serving.install_plan import router_pins
from r1deploy.serving.render import ROUTER_SERVICE, ROUTER_WORKERS_ENV, render_router_workers, router_venv


def _workers(spec) -> list[str]:
    urls = gateway_workers(spec, fleet_view()[2])
    if not urls:
        raise DeployError(f"{host.name}: no node serves {spec.model.name!r} for this gateway")
    return urls


def _routes(spec):
    """The P/D set's --prefill/--decode lists where this gateway fronts one, else None (issue 25)."""
    from r1deploy.fleet.pd_sets import gateway_routes

    return gateway_routes(spec, fleet_view()[2])


def _same_node_key(spec) -> None:
    """nginx sends the gateway's vllm_api_key_* to the nodes: it must be theirs."""
    mine = (spec.vllm.api_key_env, spec.vllm.api_key_file)
    other = sorted({name for name, s, _ in fleet_view()[2] if s.model.name == spec.model.name
                    and (s.vllm.api_key_env, s.vllm.api_key_file) != mine})
    if other:
        raise DeployError(f"{host.name}: vllm_api_key_env/_file differ from those of {', '.join(other)}: "
                          "set them where gateways and nodes share data (group_data/all.py)")


def _smoke_client_key(spec) -> None:
    """A client's key (the first by name) for the smoke through nginx, root-only on the gateway."""
    from r1deploy.roles._secret import resolved, secret_file

    from r1deploy.serving.edge import EDGE_SMOKE_HEADER, auth_header, client_keys

    clients = resolved(lambda: client_keys(spec))
    first = clients[sorted(clients)[0]] if clients else None
    secret_file(name="A client key for the smoke through nginx (0600 root)", path=EDGE_SMOKE_HEADER,
                content=auth_header(first) if first else "", present=first is not None)


def _reconcile(admin: str, workers: list[str], wait_s: int) -> None:
    """Rotation = configured nodes that answer /health, minus those whose rollout failed now.
    A router that just restarted may take a while to answer (up to `wait_s`)."""
    failed_urls = ROLLOUT.out_of_rotation
    remote(f"for i in $(seq {wait_s}); do curl -fsS -m 2 {admin}/list_workers >/dev/null && exit 0; sleep 1; done; "
           f"journalctl -u {ROUTER_SERVICE} -n 20 --no-pager -o cat; exit 1", "router answers")
    listed = json.loads(remote(f"curl -fsS -m 5 {admin}/list_workers", "router workers"))["urls"]
    for url in listed:
        if url not in workers or url in failed_urls:
            remote(f"curl -fsS -m 30 -X POST \"{admin}/remove_worker?url={url}\"", "remove worker")
            host.log(f"rotation: removed {url}")
    for url in workers:
        if url in listed or url in failed_urls:
            continue
        if remote(f"curl -fsS -m 5 {url}/health >/dev/null && echo up || echo down", "worker health").strip() == "up":
            remote(f"curl -sS -m 60 -X POST \"{admin}/add_worker?url={url}\"", "add worker")
            host.log(f"rotation: added {url}")


@deploy("Gateway")
def gateway() -> None:
    spec = host_spec()
    _same_node_key(spec)
    engine_key_files(spec, engine=False)  # the smoke through the router sends the nodes' key
    _smoke_client_key(spec)
    venv = router_venv(spec)
    _, installed = venv_packages(f"Install vllm-router=={spec.install.router_version}", venv,
                                 router_pins(spec), spec)
    workers, routes = _workers(spec), _routes(spec)
    # The start list apart from the unit: a new node list is a reconcile below, never a restart
    # (in P/D mode a restart: the P/D lists are not reconciled live yet).
    start = files.put(name="Router start list", dest=ROUTER_WORKERS_ENV,
                      src=StringIO(render_router_workers(host.name, workers, routes)), mode="644")
    # What runs where, read before the edge is rendered: nginx's site includes the live colour's
    # upstream (written here when absent), so the edge is in place before any colour switch.
    planned = router_plan(spec, routes)
    if routes:  # P/D mode: the live colour restarts in place (no blue/green, no live reconcile yet)
        plan, desired, _ = planned
        nginx_edge(spec, workers)
        restart_in_place(plan, desired[plan.live.name], installed, also=start.did_change)
        host.log(f"P/D set {routes.pd_set}: router in P/D mode, prefill {' '.join(routes.prefill)}, "
                 f"decode {' '.join(routes.decode)}")
        return
    listed = host.get_fact(RouterWorkers, url=router_admin(spec))
    nginx_edge(spec, workers)
    # A unit change is blue/green behind nginx (roles/gateway/router.py), never a restart of the live router.
    restarted = router_stage(spec, installed, planned)
    # After any restart too: the router starts with its whole start list, nodes the rollout left out included.
    python.call(name="Rotation: the router routes to the serving nodes", function=_reconcile,
                admin=router_admin(spec), workers=workers, wait_s=spec.gateway.worker_startup_timeout_s,
                _if=lambda: reconcile_wanted(listed, workers, restarted(), ROLLOUT.out_of_rotation))
