"""Preflight refuses what cannot work before anything is installed: the planner on the host's real GPUs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import LinuxDistribution

sys.path.insert(0, str(Path(__file__).resolve().parent))
from factharness import World, plan  # noqa: E402
from r1deploy.roles._plan import HostMemory  # noqa: E402
from r1deploy.roles.gpu_host import facts  # noqa: E402
from r1deploy.roles.preflight import preflight  # noqa: E402
from r1deploy.roles.preflight.facts import FreeBytes  # noqa: E402

from r1deploy.gpu import nvidia as gpu  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gpu-hosts"
R1 = {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": "56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad",
      "vllm_max_model_len": 65536, "vllm_gpu_memory_utilization": 0.95}


def gpus(name: str, count: int, mib: int) -> gpu.GpuInventory:
    one = gpu.parse_query_gpu((FIXTURES / "h200x1-ubuntu2404" / "query-gpu.csv").read_text()).gpus[0]
    return gpu.GpuInventory("ok", tuple(
        type(one)(**{**one.__dict__, "index": i, "name": name, "memory_total_mib": mib}) for i in range(count)))


def host_world(inventory: gpu.GpuInventory, free_gib: float = 2000, ram_gib: float = 2015.6) -> World:
    return World(facts={
        LinuxDistribution: {"name": "Ubuntu", "major": 24, "release_meta": {"VERSION": "24.04"}},
        FreeBytes: int(free_gib * 2**30),
        facts.Gpus: inventory,
        HostMemory: ram_gib,
    })


def test_r1_refused_on_one_8x_h100_node_with_the_planners_reasons():
    with pytest.raises(DeployError) as exc:
        plan(preflight, {"gpu-h100": (R1, host_world(gpus("NVIDIA H100 80GB HBM3", 8, 81559)))})
    text = str(exc.value)
    assert "gpu-h100: deepseek-ai/DeepSeek-R1 does not fit this hardware" in text
    assert "try:" in text  # the planner's suggestions come with the refusal


def test_r1_accepted_on_8x_h200_as_nvidia_smi_reports_them():
    plan(preflight, {"gpu-h200": (R1, host_world(gpus("NVIDIA H200", 8, 143771)))})


def test_a_kv_offload_the_hosts_ram_cannot_pin_is_refused_before_anything_is_installed():
    """Issue 22 item 5: the host's MemTotal (not plan_host_memory_gib) checks vllm_kv_offload_gib."""
    r1 = {**R1, "vllm_kv_offload_gib": 200, "plan_host_memory_gib": 4096}
    with pytest.raises(DeployError) as exc:
        plan(preflight, {"gpu-h200": (r1, host_world(gpus("NVIDIA H200", 8, 143771), ram_gib=1007.5))})
    assert "does not run: vllm_kv_offload_gib 200 pins 1,600 GiB of host RAM" in str(exc.value)


def test_disk_refused_with_the_numbers():
    with pytest.raises(DeployError, match=r"/srv/models has 100\.0 GiB free, deepseek-ai/DeepSeek-R1 needs"):
        plan(preflight, {"gpu-h200": (R1, host_world(gpus("NVIDIA H200", 8, 143771), free_gib=100))})


def test_unsupported_os_is_named():
    world = host_world(gpus("NVIDIA H200", 8, 143771))
    world.facts[LinuxDistribution] = {"name": "CentOS", "major": 7, "release_meta": {"VERSION": "7"}}
    with pytest.raises(DeployError, match="CentOS 7 is not supported"):
        plan(preflight, {"old": (R1, world)})
