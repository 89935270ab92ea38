"""Install the drift check as a systemd timer + service on the ops host(s) of an inventory.

    pyinfra -y inventories/ops.py deploy/drift_timer.py

The ops inventory names the host(s) and the `drift_*` keys (the fleet inventory to check, the
schedule, the commit to pin); see roles/drift_timer. Then, on the ops host:
`systemctl list-timers r1deploy-drift.timer`, reports under /var/lib/<drift_user>/reports/drift/latest.
"""

from r1deploy.deploys import install_drift_timer

install_drift_timer()
