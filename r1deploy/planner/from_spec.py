"""Planning from a deployment spec (``plan_for_spec``) and ranking the catalog on given hardware."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from r1deploy.planner.catalog import (
    MODELS,
    Architecture,
    GpuSpec,
    custom_gpu,
    find_gpu,
)
from r1deploy.planner.core import (
    Plan,
    plan,
)
from r1deploy.planner.profiles import (
    V1,
    ModelSpec,
)
from r1deploy.planner.recipe import Slo

# --------------------------------------------------------------------------- from a deployment spec


SPEC_ARG_KEYS = {
    "tensor_parallel_size": "tensor-parallel-size", "pipeline_parallel_size": "pipeline-parallel-size",
    "data_parallel_size": "data-parallel-size", "enable_expert_parallel": "enable-expert-parallel",
    "max_model_len": "max-model-len", "reasoning_parser": "reasoning-parser",
    "enable_prefix_caching": "enable-prefix-caching", "enable_chunked_prefill": "enable-chunked-prefill",
    "max_num_seqs": "max-num-seqs",
}


def plan_for_spec(spec: Any, gpu_name: str | None = None, gpu_count: int | None = None,
                  gpu_memory_mib: int | None = None, model_config: dict | None = None,
                  host_memory_gib: float | None = None) -> Plan:
    """Plan one host's spec. Real GPU facts (nvidia-smi name/count/memory) and RAM (MemTotal) beat
    spec.plan_*; ``model_config`` (a real config.json) beats the catalog lookup by spec.model.repo_id."""
    model = _spec_model(spec, model_config)
    v = spec.vllm
    costs = {k: getattr(spec.plan, k) for k in
             ("capex_usd", "power_kw", "power_usd_per_kwh", "cloud_usd_per_mtok", "tokens_per_day")}
    common = dict(max_model_len=v.max_model_len, gpu_memory_utilization=v.gpu_memory_utilization,
                  target_concurrency=spec.plan.target_concurrency,
                  kv_cache_dtype=v.kv_cache_dtype, quantization=spec.quant.scheme,
                  costs=costs if any(x is not None for x in costs.values()) else None,
                  overrides=spec_overrides(spec), fp8=spec.plan.fp8,
                  slo=Slo(spec.monitor.slo_ttft_p99_s, spec.monitor.slo_tpot_p99_ms))
    engine = replace(V1, max_num_seqs=v.max_num_seqs,
                     max_num_batched_tokens=v.extra_args.get("max-num-batched-tokens")
                     or v.extra_args.get("max_num_batched_tokens"))
    common["engine"] = engine
    if v.device == "cpu":
        return plan(model, custom_gpu(1024, name="cpu"), 1, spec.plan.nodes, device="cpu",
                    cpu_kvcache_space_gib=v.cpu_kvcache_space_gib, **common)
    gpu = _spec_gpu(spec, gpu_name, gpu_memory_mib)
    count = gpu_count or spec.plan.gpus_per_node or spec.gpu.expected_count or 1
    return plan(model, gpu, count, spec.plan.nodes, tensor_parallel_size=v.tensor_parallel_size,
                pipeline_parallel_size=v.pipeline_parallel_size, data_parallel_size=v.data_parallel_size,
                enable_expert_parallel=v.enable_expert_parallel, kv_offload_gib=v.kv_offload_gib,
                host_memory_gib=host_memory_gib or spec.plan.host_memory_gib, **common)


def _spec_model(spec: Any, model_config: dict | None) -> ModelSpec:
    if model_config is not None:
        return ModelSpec.from_config(spec.model.name, model_config)
    return ModelSpec.from_catalog(spec.model.repo_id)


def _spec_gpu(spec: Any, gpu_name: str | None, gpu_memory_mib: int | None) -> GpuSpec:
    name = gpu_name or spec.plan.gpu or spec.gpu.expected_model
    known = find_gpu(name) if name else None
    if gpu_memory_mib:
        return custom_gpu(gpu_memory_mib, like=known, name=known.name if known else name)
    if known is None:
        raise KeyError(f"unknown GPU {name!r}: set plan_gpu to a catalog GPU or pass the real memory")
    return known


def spec_overrides(spec: Any) -> dict[str, Any]:
    """Engine args the spec pins: every vllm_* value that is not None, plus extra_args."""
    v = spec.vllm
    out = {arg: getattr(v, key) for key, arg in SPEC_ARG_KEYS.items() if getattr(v, key) is not None}
    if v.trust_remote_code:
        out["trust-remote-code"] = True
    if v.dtype != "auto":
        out["dtype"] = v.dtype
    if v.kv_cache_dtype != "auto" and v.device != "cpu":
        out["kv-cache-dtype"] = v.kv_cache_dtype
    out.update(v.extra_args)
    return out


def rank_models(gpu: GpuSpec, gpus_per_node: int, nodes: int = 1, **kwargs: Any) -> list[Plan]:
    """Every catalog model planned on this hardware, biggest first: 'which R1 variant fits?'."""
    ordered = sorted(MODELS, key=lambda m: -Architecture.from_config(m.config).total_params())
    return [plan(ModelSpec.from_catalog(m.name), gpu, gpus_per_node, nodes, suggest=False, **kwargs)
            for m in ordered if m.name != "DeepSeek-R1-0528"]


def largest_fitting(gpu: GpuSpec, gpus_per_node: int, nodes: int = 1, **kwargs: Any) -> Plan | None:
    """The biggest model that serves its full context here; else the biggest that fits at all
    (context reduced: 2×H100 holds BF16 Llama-70B only at 16K, Qwen-32B at its full 32K)."""
    plans = [p for p in rank_models(gpu, gpus_per_node, nodes, **kwargs) if p.fits]
    full = [p for p in plans if p.max_model_len >= (kwargs.get("max_model_len") or _default_context(p.model))]
    return (full or plans or [None])[0]


def _default_context(name: str) -> int:
    model = ModelSpec.from_catalog(name)
    return min(model.entry.default_max_model_len, model.arch.max_position)
