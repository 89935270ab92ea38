"""Go back one release on purpose, rolling: the same drain, warm-up, smoke and rejoin as a rollout.

    r1deploy rollback inventories/prod.py [--limit HOST]
    pyinfra -y inventories/prod.py deploy/rollback.py

Each node returns to the release `previous` points at (the one live before the last rollout);
gateways are only used to drain and rejoin. The next plain converge rolls forward again to what
the spec renders: fix the inventory first if the new release was bad.
"""

from pyinfra import inventory
from pyinfra.api import DeployError

from r1deploy.spec import SpecError, validate_inventory
from roles._spec import host_spec
from roles.serve import rollout, serve

try:
    validate_inventory((h.name, h.data.dict()) for h in inventory)
except SpecError as exc:
    raise DeployError(str(exc)) from None

if host_spec().fleet.role == "node":
    serve(to_previous=True)
rollout()
