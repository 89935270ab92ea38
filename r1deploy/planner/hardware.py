"""Hardware rules of one host's spec, checked before connecting: what vLLM or the GPU would refuse.

Parallel sizes against the GPUs the spec says there are and the model's shape, the context
length against the model's, GPU names the catalog knows (or an explicit memory figure), and
quantization the GPU can run. The model's shape comes from the catalog when it knows the repo.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from r1deploy.planner.catalog import GPUS, Architecture, GpuSpec, find_gpu, find_model
from r1deploy.planner.layout_rules import layout_problems
from r1deploy.spec import Spec

Problem = tuple[str, str]  # (inventory key, reason)


def _set(data: Mapping[str, Any], *keys: str) -> str:
    """The first of ``keys`` the operator wrote (the one to name), else the first."""
    return next((k for k in keys if k in data), keys[0])


def architecture(spec: Spec) -> Architecture | None:
    entry = find_model(spec.model.repo_id)
    return Architecture.from_config(entry.config) if entry else None


def gpu_of(spec: Spec) -> GpuSpec | None:
    name = spec.plan.gpu or spec.gpu.expected_model
    return find_gpu(name) if name else None


def gpu_problems(spec: Spec, data: Mapping[str, Any]) -> Iterator[Problem]:
    known = ", ".join(g.name for g in GPUS)
    for key, name in (("plan_gpu", spec.plan.gpu), ("gpu_expected_model", spec.gpu.expected_model)):
        if name and find_gpu(name) is None and spec.gpu.min_memory_mib is None:
            yield key, (f"unknown GPU {name!r} (the catalog knows {known}); name one of those, "
                        "or set gpu_min_memory_mib to plan from its memory")
    planned, expected = find_gpu(spec.plan.gpu or ""), find_gpu(spec.gpu.expected_model or "")
    if planned and expected and planned.name != expected.name:
        yield "gpu_expected_model", f"{spec.gpu.expected_model!r} is not plan_gpu {spec.plan.gpu!r}"
    if spec.plan.gpus_per_node and spec.gpu.expected_count and spec.plan.gpus_per_node != spec.gpu.expected_count:
        yield (_set(data, "gpu_expected_count", "plan_gpus_per_node"),
               f"gpu_expected_count {spec.gpu.expected_count} but plan_gpus_per_node {spec.plan.gpus_per_node}")


def layout_spec_problems(spec: Spec, arch: Architecture | None) -> Iterator[Problem]:
    v = spec.vllm
    gpus = spec.plan.gpus_per_node or spec.gpu.expected_count
    gpu = gpu_of(spec)
    if gpus and gpu:
        gpus *= gpu.devices_per_package
    for field, why in layout_problems(arch, v.tensor_parallel_size, v.pipeline_parallel_size,
                                      v.data_parallel_size, gpus, spec.plan.nodes):
        yield f"vllm_{field}", why


def _rope_override(spec: Spec) -> bool:
    """vLLM serves beyond max_position_embeddings only when told: rope scaling or its own switch."""
    for name, value in spec.vllm.extra_args.items():
        squashed = "".join(c for c in name.lower() if c.isalnum())
        if squashed == "ropescaling" or (squashed == "hfoverrides" and "rope_scaling" in str(value)):
            return True
    return spec.vllm.env.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN") == "1"


def context_problems(spec: Spec, arch: Architecture | None) -> Iterator[Problem]:
    wanted = spec.vllm.max_model_len
    if arch and wanted and wanted > arch.max_position and not _rope_override(spec):
        yield "vllm_max_model_len", (f"{wanted:,} exceeds the model's max_position_embeddings "
                                     f"{arch.max_position:,}; lower it, or give a rope-scaling override "
                                     "in vllm_extra_args ('hf-overrides')")


def quant_problems(spec: Spec, arch: Architecture | None, data: Mapping[str, Any]) -> Iterator[Problem]:
    gpu = gpu_of(spec)
    if gpu is None or spec.vllm.device != "cuda":
        return
    gpu_key = _set(data, "plan_gpu", "gpu_expected_model")
    if spec.quant.scheme == "fp8_dynamic" and not gpu.fp8 and gpu.vendor == "amd":
        yield "quant_scheme", f"fp8_dynamic needs FP8 support; {gpu.name} has none (use w8a8_int8 or w4a16)"
    if arch and arch.linear_quant == "fp8" and spec.quant.scheme == "none" and not gpu.fp8 and gpu.vendor == "amd":
        yield gpu_key, (f"{spec.model.repo_id} has FP8 weights and {gpu.name} cannot run them "
                        "(no FP8, no weight-only FP8 path on ROCm); use a BF16/INT8/INT4 checkpoint")
    if spec.vllm.kv_cache_dtype.startswith("fp8") and gpu.vendor == "amd" and not gpu.fp8:
        yield "vllm_kv_cache_dtype", f"{spec.vllm.kv_cache_dtype} KV cache needs FP8 support; {gpu.name} has none"


def hardware_problems(spec: Spec, data: Mapping[str, Any]) -> list[Problem]:
    if spec.fleet.role != "node":
        return []
    arch = architecture(spec)
    out = list(context_problems(spec, arch))
    if spec.vllm.device == "cuda":
        out += [*gpu_problems(spec, data), *layout_spec_problems(spec, arch), *quant_problems(spec, arch, data)]
    return out
