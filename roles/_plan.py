"""The capacity plan of the current host: its real GPUs and RAM, when the host answers, beat plan_*."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FactBase

from r1deploy.spec import Spec


class HostMemory(FactBase):
    """The host's RAM in GiB (MemTotal), or None: the room the KV offload is sized in (planner/offload.py)."""

    def command(self) -> str:
        return "awk '/^MemTotal:/ {print $2}' /proc/meminfo"

    def process(self, output):
        return meminfo_gib(output)


def meminfo_gib(output: list[str]) -> float | None:
    """MemTotal's kB (KiB, whatever /proc says) as GiB; None where the line is not a number."""
    text = "".join(output).strip()
    return round(int(text) / 2**20, 1) if text.isdigit() and int(text) > 0 else None


def host_gpus(spec: Spec) -> tuple[str | None, int | None, int | None]:
    """(GPU name, count, MiB per GPU) from nvidia-smi on the host, or Nones before the driver is in."""
    if spec.vllm.device != "cuda" or not spec.gpu.manage:
        return None, None, None
    from r1deploy.roles._gpus import Gpus

    inventory = host.get_fact(Gpus)
    if not inventory.ok or not inventory.gpus:
        return None, None, None
    first = inventory.gpus[0]
    return first.name, len(inventory.gpus), first.memory_total_mib


def host_plan(spec: Spec):
    """The Plan for this host, or None where there is nothing to plan (CPU lab, no hardware named)."""
    name, count, mib = host_gpus(spec)
    if spec.vllm.device == "cpu" or not (name or spec.plan.gpu or spec.gpu.expected_model):
        return None
    from r1deploy.planner import plan_for_spec

    # The RAM is asked where the driver answered (a real GPU host): before that the spec's stands.
    ram = host.get_fact(HostMemory) if name else None
    return plan_for_spec(spec, gpu_name=name, gpu_count=count, gpu_memory_mib=mib, host_memory_gib=ram)
