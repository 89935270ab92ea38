"""The current host's serving group (from every host of the inventory) and its files, as serve and
drift render them: one function, so drift compares against exactly what serve would write."""

from __future__ import annotations

from pyinfra import host, inventory
from r1deploy.roles._spec import host_spec

from r1deploy.fleet.groups import serving_groups
from r1deploy.serving.ep_kernels import plan_engine_args
from r1deploy.serving.group import ServingGroup
from r1deploy.serving.render import NodeFiles, render_node
from r1deploy.spec import Spec


def host_group(spec: Spec) -> ServingGroup | None:
    """This host's group, built from the specs of every inventory host (validated before connecting)."""
    if not spec.fleet.group:
        return None
    members = {h.name: host_spec(h) for h in inventory if h.data.get("fleet_group") == spec.fleet.group}
    return serving_groups(members)[spec.fleet.group]


def render_host(spec: Spec, plan) -> NodeFiles:
    """This host's release: the plan's engine args and recipe env, its group's launch flags."""
    planned, env, source = (plan_engine_args(spec, plan), plan.engine_env(), "the capacity plan") \
        if plan and plan.fits else (None, None, None)
    return render_node(spec, host.name, spec.vllm.host_ip or host.data.get("ssh_hostname"), planned, source,
                       env, host_group(spec), plan.gpus_per_node if plan else 1)
