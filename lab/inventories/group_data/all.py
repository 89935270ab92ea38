# The lab's copy of inventories/group_data/all.py (pyinfra reads group_data beside the inventory).
# Defaults shared by every fleet. Everything not set here falls back to r1deploy/spec.py.
fleet_name = "r1"
smoke_max_tokens = 32
