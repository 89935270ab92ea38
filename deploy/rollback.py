"""Go back one release on purpose, rolling: the same drain, warm-up, smoke and rejoin as a rollout.

    r1deploy rollback inventories/prod.py [--limit HOST]
    pyinfra -y inventories/prod.py deploy/rollback.py

Each node returns to the release `previous` points at (the one live before the last rollout);
gateways are only used to drain and rejoin. The next plain converge rolls forward again to what
the spec renders: fix the inventory first if the new release was bad.
"""

from r1deploy.deploys import roll_back

roll_back()
