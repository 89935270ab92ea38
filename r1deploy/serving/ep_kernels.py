"""Expert parallel on Hopper: the kernels vLLM's EP backends need, and the all-to-all backend. Pure.

vLLM's docs/serving/expert_parallel_deployment.md (0.1x-0.2x) lists what EP needs besides vLLM:
DeepEP (built against NVSHMEM by tools/ep_kernels/install_python_libraries.sh; older docs add
pplx-kernels, removed as a backend since), DeepGEMM (tools/install_deepgemm.sh, vLLM's fork), and
gdrcopy for multi-node/disaggregated serving. ``--all2all-backend`` (ParallelConfig.all2all_backend)
takes ``allgather_reducescatter`` (the default), ``deepep_high_throughput`` (prefill-heavy,
multi-node), ``deepep_low_latency`` (decode, CUDA graphs), and more in later releases (0.32:
deepep_v2, mori_*, nixl_ep, flashinfer_*; pplx and naive fall back to the default). The names
rendered here are in 0.26 and 0.32 alike, and tests/test_vllm_parser.py parses them with 0.32.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

DEEPEP_BACKENDS = ("deepep_high_throughput", "deepep_low_latency")
ALL2ALL_BACKENDS = ("allgather_reducescatter", *DEEPEP_BACKENDS)  # vllm_all2all_backend (spec.py)
# DP + EP: throughput first (vLLM's recipe for DeepSeek's prefill-heavy traffic, one or many nodes).
PLAN_BACKEND = "deepep_high_throughput"
# What vLLM's tooling builds: DeepEP 1.2.1 (+ the commit, a local label: `==1.2.1` matches it),
# DeepGEMM from vLLM's fork. Wheels from the operator's wheelhouse (install_find_links/index).
DEFAULT_KERNELS = ["deep_gemm==2.6.1", "deep_ep==1.2.1"]
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+$")


def exact_pins(v: list[str]) -> list[str]:
    """install_ep_kernels: exact `name==version` pins (a wheelhouse serves what was built)."""
    for i, req in enumerate(v):
        if not PIN.match(req):
            raise ValueError(f"entry {i} {req!r} is not an exact pin 'name==version' (e.g. 'deep_ep==1.2.1')")
    return v


def spec_problems(spec: Any) -> list[tuple[str, str]]:
    """(key, reason) for an all-to-all backend the host cannot run."""
    backend = spec.vllm.all2all_backend
    if backend not in DEEPEP_BACKENDS:
        return []
    if spec.vllm.device != "cuda":
        return [("vllm_all2all_backend", f"{backend!r} is DeepEP's, NVIDIA CUDA only; this host has "
                 f"vllm_device={spec.vllm.device!r}: leave vllm_all2all_backend unset")]
    if spec.vllm.enable_expert_parallel is False:
        return [("vllm_all2all_backend", f"{backend!r} carries expert-parallel traffic, but "
                 "vllm_enable_expert_parallel is False")]
    if not spec.install.ep_kernels:
        return [("vllm_all2all_backend", f"{backend!r} needs DeepEP in the vLLM venv, but "
                 "install_ep_kernels is empty")]
    return []


def _hopper(gpu_name: str | None) -> bool:
    from r1deploy.planner.catalog import find_gpu

    gpu = find_gpu(gpu_name) if gpu_name else None
    return bool(gpu and gpu.arch == "hopper")


def plan_uses_ep_kernels(spec: Any, plan: Any) -> bool:
    """The plan runs data parallel with expert parallel on NVIDIA Hopper (CUDA): DeepEP carries
    the experts' all-to-all, DeepGEMM their FP8 GEMMs (VLLM_USE_DEEP_GEMM=1 in the recipe env)."""
    if plan is None or not plan.fits or spec.vllm.device != "cuda" or not _hopper(plan.gpu):
        return False
    args = plan.engine_args()
    return bool(args.get("enable-expert-parallel")) and int(args.get("data-parallel-size") or 1) > 1


def kernels_for(spec: Any, plan: Any) -> list[str]:
    """The pip requirements the vllm stage installs next to vLLM on this host ([] for most hosts)."""
    return list(spec.install.ep_kernels) if plan_uses_ep_kernels(spec, plan) else []


def all2all_args(spec: Any, plan: Any) -> dict[str, Any]:
    """The plan's backend where its kernels are installed; an explicit vllm_all2all_backend wins
    (rendered as an explicit key), and elsewhere vLLM's default stands."""
    if spec.vllm.all2all_backend is None and kernels_for(spec, plan):
        return {"all2all-backend": plan.engine_args().get("all2all-backend", PLAN_BACKEND)}
    return {}


def plan_engine_args(spec: Any, plan: Any) -> dict[str, Any]:
    """The plan's args; its DeepEP-only choices (all2all backend, dual-batch overlap) only where
    the kernels are installed (install_ep_kernels), else vLLM's default all-to-all stands."""
    from r1deploy.planner.recipe import DEEPEP_KEYS

    args = plan.engine_args()
    if not kernels_for(spec, plan):
        for key in DEEPEP_KEYS:
            if key not in spec_explicit(spec):
                args.pop(key, None)
    return {**args, **all2all_args(spec, plan)}


def spec_explicit(spec: Any) -> set[str]:
    """Engine keys the operator set in vllm_extra_args (kept whatever the plan says)."""
    return set(spec.vllm.extra_args)


def import_check(venv: str, requirements: list[str]) -> str:
    """A shell command that fails, saying what and why, unless the kernels import in the venv."""
    modules = ", ".join(dict.fromkeys(re.split(r"[=<>!~\[ ;]", r, maxsplit=1)[0].replace("-", "_")
                                      for r in requirements))
    why = (f"expert-parallel kernels ({modules}) do not import in {venv}: the wheels must be built "
           "against the CUDA, torch and NVSHMEM of this host (see tools/ep_kernels in vLLM); the engine was "
           "not restarted")
    return (f"{venv}/bin/python -c {shlex.quote(f'import {modules}')} "
            f"|| {{ echo {shlex.quote(why)} >&2; exit 1; }}")
