"""The main job: bare hosts to a serving R1 fleet behind a gateway.

    pyinfra inventories/prod.py deploy/main.py [--dry] [--diff] [--limit HOST]

Stages per node: preflight, base, firewall, GPU host, weights, quantize (when quant_scheme is set), vLLM,
serve (the release), rollout (batches: drain, restart, warm-up, smoke, rejoin; rollback on failure).
Gateways: preflight, base, firewall, then — after the last batch — gateway and smoke through it. The whole inventory is validated
before the first operation of the first host, so a bad inventory touches no host.
"""

from pyinfra import host, inventory
from pyinfra.api import DeployError

from r1deploy.fleet.validate import validate_inventory
from r1deploy.spec import SpecError
from roles._lease import hold, let_go, my_gateways
from roles._spec import host_spec
from roles.base import base
from roles.firewall import firewall
from roles.gateway import gateway
from roles.gpu_host import gpu_host
from roles.monitor import monitor
from roles.preflight import preflight
from roles.quantize import quantize
from roles.serve import rollout, serve
from roles.smoke import smoke
from roles.vllm import vllm
from roles.weights import weights

# Every bad host and field at once; pyinfra stops before any operation runs on any host.
try:
    validate_inventory((h.name, h.data.dict()) for h in inventory)
except SpecError as exc:
    raise DeployError(str(exc)) from None

spec = host_spec()
# One converge at a time per gateway (issue 21 item 6): before anything else, given back at the end.
hold(name="Converge lease on the gateways", gateways=my_gateways(spec, host.name),
     wait_s=spec.rollout.lock_wait_s, stale_s=spec.rollout.lock_stale_s)
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
