"""GPU hosts only: preflight, then the gpu_host role (driver, NCCL, fabric manager, reboot, gate).

    pyinfra INVENTORY deploy/gpu_hosts.py [--limit HOST]

For provisioning GPU servers ahead of the serving stages of deploy/main.py, and for the lab's
SIMULATED GPU hosts (tests/test_gpu_lab.py), which have no model to serve. Every host must be
a node with gpu_manage left on; the inventory is validated before any operation runs.
"""

from r1deploy.deploys import provision_gpu_hosts

provision_gpu_hosts()
