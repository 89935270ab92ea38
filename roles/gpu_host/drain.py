"""PLACEHOLDER for issue 14 item 6 (the lead's): a node that must reboot for a driver change
is drained from the gateways first, and rejoins after the gate, warm-up and smoke.

`drain_before_reboot` is called by the GPU role right before it reboots a host (NVIDIA and
AMD alike, roles/gpu_host/ops.py `_reboot`), with the host and the reason. It yields pyinfra
commands (StringCommand / FunctionCommand) to run before the reboot; a FunctionCommand that
returns False stops this host before it reboots. Today it yields nothing: replace this module
(keep the name and signature) with the rolling-update drain.
"""

from __future__ import annotations

from collections.abc import Iterator


def drain_before_reboot(host, why: str) -> Iterator:
    """No-op until the rolling-update drain exists: yields no command."""
    return iter(())
