"""The local lab (`make lab`): serving nodes and a gateway, as `lab up` made them.

Groups: `nodes`, `gateways`, and `lab` (pyinfra names a group after this file), whose data is
in group_data/lab.py. lab/inventories/lab_group.py is the same lab with a serving group.
"""

from lab.state import inventory_hosts, lab_info

_lab = lab_info()
nodes = inventory_hosts(_lab, "node")
gateways = inventory_hosts(_lab, "gateway")

# A bad inventory stops here, naming host and field, before pyinfra connects anywhere.
from r1deploy.fleet.inventory import validate_before_connecting  # noqa: E402

validate_before_connecting(__file__)
