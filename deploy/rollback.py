"""Go back one release on purpose, rolling: the same drain, warm-up, smoke and rejoin as a rollout.

    r1deploy rollback inventories/prod.py [--limit HOST]
    pyinfra -y inventories/prod.py deploy/rollback.py

Each node returns to the release `previous` points at (the one live before the last rollout);
gateways are only used to drain and rejoin. The next plain converge rolls forward again to what
the spec renders: fix the inventory first if the new release was bad.
"""

from pyinfra import host, inventory
from pyinfra.api import DeployError

from r1deploy.fleet.validate import validate_inventory
from r1deploy.spec import SpecError
from roles._lease import hold, let_go, my_gateways
from roles._spec import host_spec
from roles.serve import rollout, serve

try:
    validate_inventory((h.name, h.data.dict()) for h in inventory)
except SpecError as exc:
    raise DeployError(str(exc)) from None

spec = host_spec()
hold(name="Converge lease on the gateways", gateways=my_gateways(spec, host.name),  # issue 21 item 6
     wait_s=spec.rollout.lock_wait_s, stale_s=spec.rollout.lock_stale_s)
if spec.fleet.role == "node":
    serve(to_previous=True)
rollout()
let_go(name="Give the converge lease back")
