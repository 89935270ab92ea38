"""r1deploy's deploys as functions (`r1deploy.deploys` once installed), pyinfra's packaged-deploy
convention: an operator's deploy file imports one and calls it, and pyinfra runs that file once per
host. The files beside this one (main.py, drift.py, ...) are exactly such deploy files:

    pyinfra inventory.py deploy.py          # deploy.py: from r1deploy.deploys import converge; converge()

Each function imports its roles when called, so a deploy loads only the stages it runs.
"""

from r1deploy.deploys._converge import converge, roll_back
from r1deploy.deploys._drift import check_drift
from r1deploy.deploys._hosts import bootstrap_hosts, install_drift_timer, provision_gpu_hosts

__all__ = ["bootstrap_hosts", "check_drift", "converge", "install_drift_timer", "provision_gpu_hosts",
           "roll_back"]
