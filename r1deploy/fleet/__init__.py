"""The fleet as a whole: the inventory loaded (inventory.py) and validated before any host is touched
(validate.py), serving groups (groups.py), rolling-update decisions (rollout.py), `r1deploy rollback`
(rollback.py) and pinned SSH host keys (hostkeys.py)."""
