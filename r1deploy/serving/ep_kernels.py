"""Expert parallel on Hopper: the kernels vLLM's EP backends need, and the all-to-all backend. Pure.

vLLM's docs/serving/expert_parallel_deployment.md (0.1x-0.2x) lists what EP needs besides vLLM:
DeepEP (built against NVSHMEM by tools/ep_kernels/install_python_libraries.sh; older docs add
pplx-kernels, removed as a backend since), DeepGEMM (tools/install_deepgemm.sh, vLLM's fork), and
gdrcopy for multi-node/disaggregated serving. ``--all2all-backend`` (ParallelConfig.all2all_backend)
takes ``allgather_reducescatter`` (the default), ``deepep_high_throughput`` (prefill-heavy,
multi-node), ``deepep_low_latency`` (decode, CUDA graphs), and more in later releases (0.32:
deepep_v2, mori_*, nixl_ep, flashinfer_*; pplx and naive fall back to the default). The names
rendered here are in 0.26 and 0.32 alike, and tests/test_vllm_parser.py parses them with 0.32.

Where each comes from: vLLM (0.26 at least) vendors DeepGEMM (`vllm.third_party.deep_gemm`, its log
says "deep_gemm not found in site-packages, trying vendored"), so nothing is installed for it.
DeepEP has no installable release on the package index (only a placeholder): vLLM's
tools/ep_kernels/install_python_libraries.sh clones it at a commit and builds it against the
host's CUDA and an NVSHMEM archive (`--mode wheel` writes the wheel). So nothing is pinned by
default: a DP + EP plan runs vLLM's default all-to-all (allgather_reducescatter) and says why,
until the operator serves that wheel (install_find_links) and names it in install_ep_kernels.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

DEEPEP_BACKENDS = ("deepep_high_throughput", "deepep_low_latency")
ALL2ALL_BACKENDS = ("allgather_reducescatter", *DEEPEP_BACKENDS)  # vllm_all2all_backend (spec.py)
# DP + EP over several nodes: DeepEP's (vLLM's expert-parallel guide: DeepEP is for multi-node
# traffic). On one node the plan keeps vLLM's default, allgather_reducescatter: the guide's
# general-purpose backend, what vLLM's DeepSeek-R1 recipe runs for 8xH200 DP8+EP (it passes no
# --all2all-backend), and unlike deepep_high_throughput (prefill-oriented, no CUDA graphs) fit for
# R1's decode-heavy reasoning output.
PLAN_BACKEND = "deepep_high_throughput"
# Nothing by default: DeepGEMM is vendored by vLLM, and DeepEP exists only as a wheel the operator
# builds with vLLM's tools/ep_kernels (e.g. `deep_ep==1.2.1`, which matches its `+<commit>` label).
DEFAULT_KERNELS: list[str] = []
DEEPEP = "deep-ep"  # its distribution name, canonical (deep_ep, deep-ep and DeepEP alike)
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
    if not has_deepep(spec.install.ep_kernels):
        return [("vllm_all2all_backend", f"{backend!r} needs DeepEP in the vLLM venv, but "
                 f"install_ep_kernels is {'empty' if not spec.install.ep_kernels else 'without deep_ep'} "
                 "(build its wheel with vLLM's tools/ep_kernels/install_python_libraries.sh --mode wheel)")]
    return []


def has_deepep(requirements: list[str]) -> bool:
    return any(re.sub(r"[-_.]+", "-", r.split("==")[0]).lower() == DEEPEP for r in requirements)


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
    """The plan's backend where DP + EP spans nodes and DeepEP is installed; an explicit
    vllm_all2all_backend wins (rendered as an explicit key), and elsewhere, one node included,
    vLLM's default stands."""
    if spec.vllm.all2all_backend is None and has_deepep(kernels_for(spec, plan)) and plan.nodes > 1:
        return {"all2all-backend": plan.engine_args().get("all2all-backend", PLAN_BACKEND)}
    return {}


def fallback_note(spec: Any, plan: Any) -> str | None:
    """What the plan says where it runs DP + EP without DeepEP: which backend runs, which need it."""
    if spec.vllm.all2all_backend is not None or not plan_uses_ep_kernels(spec, plan) \
            or has_deepep(spec.install.ep_kernels):
        return None
    return ("DP + EP without DeepEP (install_ep_kernels names no deep_ep): all-to-all runs vLLM's default "
            f"allgather_reducescatter; {' and '.join(DEEPEP_BACKENDS)} need DeepEP, which no package index "
            "carries: build its wheel against this host's CUDA with vLLM's tools/ep_kernels/"
            "install_python_libraries.sh --mode wheel, serve it through install_find_links and name it in "
            "install_ep_kernels. DeepGEMM needs nothing: vLLM vendors it.")


def plan_engine_args(spec: Any, plan: Any) -> dict[str, Any]:
    """The plan's args; its all-to-all backend only where all2all_args keeps it (DP + EP over
    nodes with DeepEP installed), and dual-batch overlap only beside a DeepEP backend (vLLM's
    DBO runs on DeepEP's all-to-all). What the operator set in vllm_extra_args stays."""
    from r1deploy.planner.recipe import DEEPEP_KEYS

    explicit = spec_explicit(spec)
    args = {k: v for k, v in plan.engine_args().items() if k not in DEEPEP_KEYS or k in explicit}
    args.update(all2all_args(spec, plan))
    if args.get("all2all-backend") in DEEPEP_BACKENDS or spec.vllm.all2all_backend in DEEPEP_BACKENDS:
        args.update({k: v for k, v in plan.engine_args().items() if k in DEEPEP_KEYS and k != "all2all-backend"})
    return args


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
