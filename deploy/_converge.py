"""The converge (bare hosts to a serving fleet) and the deliberate rollback: see main.py, rollback.py."""

from pyinfra import host, inventory
from pyinfra.api import DeployError

from r1deploy.fleet.validate import validate_inventory
from r1deploy.spec import SpecError


def validated() -> None:
    """Every bad host and field at once; pyinfra stops before any operation runs on any host."""
    try:
        validate_inventory((h.name, h.data.dict()) for h in inventory)
    except SpecError as exc:
        raise DeployError(str(exc)) from None


def _hold(spec) -> None:
    from r1deploy.roles._lease import hold, my_gateways

    # One converge at a time per gateway (issue 21 item 6): before anything else, given back at the end.
    hold(name="Converge lease on the gateways", gateways=my_gateways(spec, host.name),
         wait_s=spec.rollout.lock_wait_s, stale_s=spec.rollout.lock_stale_s)


def converge() -> None:
    """Stages per node: preflight, base, firewall, GPU host, weights, quantize (when quant_scheme is set), vLLM,
    serve (the release), rollout (batches: drain, restart, warm-up, smoke, rejoin; rollback on
    failure). Gateways: preflight, base, firewall, then, after the last batch, gateway and smoke through it."""
    from r1deploy.roles._lease import let_go
    from r1deploy.roles._spec import host_spec
    from r1deploy.roles.base import base
    from r1deploy.roles.firewall import firewall
    from r1deploy.roles.gateway import gateway
    from r1deploy.roles.gpu_host import gpu_host
    from r1deploy.roles.monitor import monitor
    from r1deploy.roles.preflight import preflight
    from r1deploy.roles.quantize import quantize
    from r1deploy.roles.serve import rollout, serve
    from r1deploy.roles.smoke import smoke
    from r1deploy.roles.vllm import vllm
    from r1deploy.roles.weights import weights

    validated()
    spec = host_spec()
    _hold(spec)
    preflight()
    base()
    # The host firewall (issue 23 item 3): once the host is provisioned, before it serves anything.
    firewall()
    if spec.fleet.role == "node":
        if spec.gpu.manage:
            gpu_host()
        weights()
        if spec.quant.scheme != "none":
            quantize()
        vllm()
        serve()
    # Every host, from this one line: the batches of the rolling update (roles/serve). A gateway's
    # stages below run after the last batch (pyinfra orders operations per host).
    rollout()
    if spec.fleet.role == "gateway":
        gateway()
    smoke()
    monitor()
    let_go(name="Give the converge lease back")


def roll_back() -> None:
    """Each node back to the release `previous` points at, rolling; gateways drain and rejoin."""
    from r1deploy.roles._lease import let_go
    from r1deploy.roles._spec import host_spec
    from r1deploy.roles.serve import rollout, serve

    validated()
    spec = host_spec()
    _hold(spec)
    if spec.fleet.role == "node":
        serve(to_previous=True)
    rollout()
    let_go(name="Give the converge lease back")
