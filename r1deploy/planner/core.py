"""The plan: ``plan()`` (pure), the Plan it returns and its reasons, the CPU backend, cost and payback."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from r1deploy.planner.catalog import (
    GIB,
    Architecture,
    GpuSpec,
)
from r1deploy.planner.layout import (
    Evaluation,
    Request,
    _fits,
)
from r1deploy.planner.layout_rules import layout_problems
from r1deploy.planner.memory import (
    kv_tokens,
    stage_weights_bytes,
)
from r1deploy.planner.profiles import (
    V1,
    Cost,
    EngineProfile,
    Layout,
    ModelSpec,
)
from r1deploy.planner.recipe import Slo

# --------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    fits: bool
    model: str
    gpu: str
    device: str
    gpus_per_node: int
    nodes: int
    tensor_parallel_size: int
    pipeline_parallel_size: int
    data_parallel_size: int
    enable_expert_parallel: bool
    max_model_len: int
    gpu_memory_utilization: float
    kv_cache_dtype: str
    quantization: str | None
    weights_gib_per_gpu: float
    non_torch_gib: float
    activation_gib: float
    cuda_graph_gib: float
    kv_cache_gib_per_gpu: float
    kv_bytes_per_token: int
    kv_cache_tokens: int  # per model replica, as vLLM prints "GPU KV cache size: N tokens"
    max_concurrency: float  # full-length requests across all replicas
    reasons: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    cost: Cost | None = None
    meets_target: bool | None = None  # against plan_target_concurrency, when set
    recommended_env: dict[str, str] = field(default_factory=dict)
    launch: str | None = None  # how vLLM starts a layout over several nodes (r1deploy/serving/launch.py)
    recommended_args: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, float] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    # What the serve stage renders of engine_args() where it drops kernels the host lacks (set by the
    # inventory's plan command, r1deploy/commands/plan.py); None: engine_args() as it is.
    rendered_engine_args: dict[str, Any] | None = None
    kv_offload_gib: float | None = None  # --kv-offloading-size per engine (planner/offload.py); None: off

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("overrides")
        data.pop("rendered_engine_args")
        data["engine_args"] = self.engine_args() if self.rendered_engine_args is None else self.rendered_engine_args
        data["engine_env"] = self.engine_env()
        return data

    def engine_args(self) -> dict[str, Any]:
        """vLLM engine args (keys as in ``vllm serve --config`` YAML); spec values override the plan."""
        args: dict[str, Any] = {"max-model-len": self.max_model_len}
        args.update({k: v for k, v in self.recommended_args.items() if k != "enable-expert-parallel"})
        if self.device == "cpu":
            args["dtype"] = "bfloat16"
        else:
            args.update({
                "tensor-parallel-size": self.tensor_parallel_size,
                "pipeline-parallel-size": self.pipeline_parallel_size,
                "gpu-memory-utilization": self.gpu_memory_utilization,
                "enable-chunked-prefill": True,
                "enable-prefix-caching": True,
            })
            if self.data_parallel_size > 1:
                args["data-parallel-size"] = self.data_parallel_size
            if self.enable_expert_parallel:
                args["enable-expert-parallel"] = True
            if self.kv_cache_dtype != "auto":
                args["kv-cache-dtype"] = self.kv_cache_dtype
        for key, value in self.overrides.items():
            if value is False and key in {"enable-expert-parallel", "trust-remote-code"}:
                args.pop(key, None)
            else:
                args[key] = value
        return args

    def engine_env(self) -> dict[str, str]:
        """Environment the engine needs for this plan (the CPU backend sizes KV from it)."""
        if self.device == "cpu":
            return {"VLLM_CPU_KVCACHE_SPACE": str(round(self.kv_cache_gib_per_gpu))}
        return dict(self.recommended_env)


# --------------------------------------------------------------------------- planning


def plan(model: ModelSpec, gpu: GpuSpec, gpus_per_node: int, nodes: int = 1, *,
         max_model_len: int | None = None, gpu_memory_utilization: float = 0.9, kv_cache_dtype: str = "auto",
         quantization: str | None = None, tensor_parallel_size: int | None = None,
         pipeline_parallel_size: int | None = None, data_parallel_size: int | None = None,
         enable_expert_parallel: bool | None = None, prefer: str = "throughput", engine: EngineProfile = V1,
         cuda_graphs: bool = True, device: str = "cuda", cpu_kvcache_space_gib: float = 4.0,
         costs: dict[str, float | None] | None = None, overrides: dict[str, Any] | None = None,
         target_concurrency: int | None = None, suggest: bool = True, fp8: bool = False,
         slo: Slo | None = None, kv_offload_gib: float | None = None,
         host_memory_gib: float | None = None) -> Plan:
    """A pure function: the memory plan of ``model`` on ``nodes`` × ``gpus_per_node`` × ``gpu``.
    ``fp8``: the operator's opt-in to FP8 weights/KV (plan_fp8); ``slo``: what the batching budget
    and the FP8 KV choice are sized for (monitor_slo_*); without it vLLM's own batching defaults stand
    (the agreement tables compare with vLLM runs at its defaults). ``kv_offload_gib`` (vllm_kv_offload_gib:
    None plans it, 0 is off) and ``host_memory_gib`` (the host's RAM) size the KV offload (offload.py)."""
    _check_inputs(gpus_per_node=gpus_per_node, nodes=nodes, max_model_len=max_model_len,
                  tensor_parallel_size=tensor_parallel_size, pipeline_parallel_size=pipeline_parallel_size,
                  data_parallel_size=data_parallel_size, target_concurrency=target_concurrency,
                  gpu_memory_utilization=gpu_memory_utilization, cpu_kvcache_space_gib=cpu_kvcache_space_gib,
                  gpu_memory_mib=gpu.memory_mib)
    quant = None if quantization in (None, "none") else quantization
    req = Request(model, gpu, gpus_per_node, nodes, max_model_len, gpu_memory_utilization, kv_cache_dtype,
                  quant, engine, cuda_graphs, device, cpu_kvcache_space_gib, prefer)
    if device == "cpu":
        result = _plan_cpu(req)
    else:
        from r1deploy.planner.speed import plan_for_speed

        fixed = _fixed_layout(req, tensor_parallel_size, pipeline_parallel_size, data_parallel_size,
                              enable_expert_parallel)
        result = plan_for_speed(req, fixed, fp8, slo or Slo(), batching=slo is not None)
        if result.fits:
            from r1deploy.planner.offload import apply_offload

            apply_offload(result, model.arch, kv_offload_gib, host_memory_gib, overrides)
    result.overrides = dict(overrides or {})
    if costs:
        result.cost = payback(**costs)
        result.reasons.extend(_cost_reasons(result.cost))
    if suggest and not result.fits:
        from r1deploy.planner.advice import suggestions  # which plans it on changed hardware

        result.suggestions = suggestions(req, result)
    if target_concurrency:
        _check_target(req, result, target_concurrency)
    return result


def _check_inputs(gpu_memory_utilization: float, cpu_kvcache_space_gib: float, **counts: int | None) -> None:
    """Nonsense in is an error, not a plan (issue 21 item 16: --nodes 0 divided by zero, and
    --gpu-memory-utilization 1.5 said FITS). The spec has the same bounds; this guards the flags."""
    for name, value in counts.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} {value}: must be at least 1")
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization {gpu_memory_utilization}: a fraction of the GPU's "
                         "memory, more than 0 and at most 1 (vLLM's default 0.9)")
    if cpu_kvcache_space_gib <= 0:
        raise ValueError(f"cpu_kvcache_space_gib {cpu_kvcache_space_gib}: must be more than 0")


def _check_target(req: Request, result: Plan, target: int) -> None:
    """plan_target_concurrency: full-length requests the fleet must hold at once."""
    result.meets_target = result.fits and result.max_concurrency >= target
    if not result.fits or result.meets_target:
        return
    result.reasons.append(f"below target: {result.max_concurrency:g} concurrent {result.max_model_len:,}-token "
                          f"requests, target {target}")
    per_node = result.max_concurrency / req.nodes
    if per_node > 0:
        result.suggestions.append(f"more nodes: ~{math.ceil(target / per_node)} nodes like this reach {target}")
    if req.kv_cache_dtype == "auto" and req.device != "cpu":
        result.suggestions.append("kv_cache_dtype fp8 roughly doubles the KV tokens (small accuracy cost)")


def _fixed_layout(req: Request, tp: int | None, pp: int | None, dp: int | None, ep: bool | None) -> Layout | None:
    if tp is None and pp is None and dp is None:
        return None
    tp = tp or 1
    pp = pp or 1
    dp = dp or max(1, req.devices_per_node * req.nodes // (tp * pp))
    ep = req.model.arch.is_moe if ep is None else ep
    return Layout(tp, pp, dp, ep, dp_shares_experts=ep and dp > 1)


def _to_plan(req: Request, ev: Evaluation, context: int, why: list[str]) -> Plan:
    worst, layout = ev.worst, ev.layout
    impossible = [w for _, w in layout_problems(req.model.arch, layout.tp, layout.pp, layout.dp,
                                                 req.devices_per_node, req.nodes)]
    fits = _fits(ev, context) and not _unsupported(req) and not impossible
    reasons = [f"layout TP{layout.tp} × PP{layout.pp} × DP{layout.dp}"
               + (" + EP" if layout.ep else "") + f": {why[0]}", *(f"does not run: {w}" for w in impossible),
               *why[1:]]
    reasons += _memory_reasons(req, ev, context, fits or (bool(impossible) and _fits(ev, context)))
    reasons += _hardware_reasons(req, layout)
    launch = _launch(req, layout)
    if launch:
        reasons.append(f"launch {launch.mode}: {launch.why}")
    concurrency = ev.tokens / context * layout.dp if context else 0.0
    entry = req.model.entry
    plan_env = recipe_env(req.model.arch, req.gpu)
    return Plan(
        fits=fits, model=req.model.name, gpu=req.gpu.name, device=req.device, gpus_per_node=req.gpus_per_node,
        nodes=req.nodes, tensor_parallel_size=layout.tp, pipeline_parallel_size=layout.pp,
        data_parallel_size=layout.dp, enable_expert_parallel=layout.ep, max_model_len=context,
        gpu_memory_utilization=req.gpu_memory_utilization, kv_cache_dtype=req.kv_cache_dtype,
        quantization=req.quantization, weights_gib_per_gpu=round(max(s.weights_gib for s in ev.stages), 2),
        non_torch_gib=round(worst.non_torch_gib, 2), activation_gib=round(worst.activation_gib, 2),
        cuda_graph_gib=round(worst.cuda_graph_gib, 2), kv_cache_gib_per_gpu=round(max(worst.kv_gib, 0.0), 2),
        kv_bytes_per_token=int(worst.kv_bytes_per_token), kv_cache_tokens=ev.tokens,
        max_concurrency=round(concurrency, 2), reasons=reasons, recommended_env=plan_env,
        launch=launch.mode if launch else None,
        recommended_args=dict(entry.recommended_args) if entry else {"reasoning-parser": "deepseek_r1"},
        sampling=dict(entry.sampling) if entry else {"temperature": 0.6, "top_p": 0.95},
    )


def _launch(req: Request, layout: Layout):
    """vLLM's multi-node launch for a layout over several nodes (None on one node)."""
    if req.nodes == 1:
        return None
    from r1deploy.planner.launch import choose_launch

    args = {"tensor-parallel-size": layout.tp, "pipeline-parallel-size": layout.pp,
            "data-parallel-size": layout.dp, "enable-expert-parallel": layout.ep}
    try:
        return choose_launch(args, req.devices_per_node, req.nodes)
    except ValueError:
        return None


def recipe_env(arch: Architecture, gpu: GpuSpec) -> dict[str, str]:
    """vLLM recipe environment: DeepGEMM for block-FP8 MoE on Hopper, AITER kernels on MI300."""
    if gpu.arch == "cdna3":
        return {"VLLM_ROCM_USE_AITER": "1"}
    if arch.is_moe and arch.linear_quant == "fp8" and gpu.arch == "hopper":
        return {"VLLM_USE_DEEP_GEMM": "1"}
    return {}


def _memory_reasons(req: Request, ev: Evaluation, context: int, fits: bool) -> list[str]:
    w = ev.worst
    budget = req.gpu_memory_utilization * req.gpu.usable_gib
    lines = [f"per GPU: {req.gpu_memory_utilization:.2f} × {req.gpu.usable_gib:.1f} GiB = {budget:.1f} GiB; "
             f"weights {max(s.weights_gib for s in ev.stages):.1f}, non-torch {w.non_torch_gib:.2f}, "
             f"activations {w.activation_gib:.2f}, CUDA graphs {w.cuda_graph_gib:.2f} → KV cache "
             f"{max(w.kv_gib, 0):.1f} GiB"]
    kind = "MLA latent, same on every TP rank" if req.model.arch.is_mla else "K+V, split across TP ranks"
    lines.append(f"KV cache: {int(w.kv_bytes_per_token):,} bytes/token/GPU ({kind}) → {ev.tokens:,} tokens per replica")
    if not ev.weights_fit:
        lines.append(f"does not fit: weights and reserves exceed {budget:.1f} GiB per GPU")
    elif not fits:
        lines.append(f"does not fit: {ev.tokens:,} KV tokens cannot hold one {context:,}-token request")
    else:
        lines.append(f"fits: {ev.tokens / context * ev.layout.dp:.1f} concurrent {context:,}-token requests")
    return lines


def _unsupported(req: Request) -> bool:
    """vLLM's ROCm FP8 kernels need MI300-class GPUs; older AMD parts cannot load FP8 checkpoints."""
    return req.model.arch.linear_quant == "fp8" and not req.quantization and not req.gpu.fp8 \
        and req.gpu.vendor == "amd"


def _hardware_reasons(req: Request, layout: Layout) -> list[str]:
    out = []
    if not req.gpu.arch:
        out.append(f"{req.gpu.name} is not in the GPU catalog: planned from its memory alone, assuming "
                   "no FP8 and PCIe links")
    if _unsupported(req):
        out.append(f"does not run: {req.gpu.name} lacks FP8 and vLLM on ROCm has no weight-only FP8 path; "
                   "use a BF16/INT8/INT4 checkpoint or MI300-class GPUs")
    elif req.model.arch.linear_quant == "fp8" and not req.gpu.fp8:
        out.append(f"{req.gpu.name} has no FP8 tensor cores: FP8 weights run through weight-only kernels "
                   "(slower); consider a BF16/INT8/INT4 checkpoint")
    if layout.tp > 1 and not req.gpu.fast_interconnect:
        out.append(f"TP{layout.tp} over PCIe: all-reduce per layer is bandwidth-bound; expect lower speed than NVLink")
    if req.gpu.devices_per_package > 1:
        out.append(f"each {req.gpu.name} is {req.gpu.devices_per_package} devices of {req.gpu.usable_gib:.0f} GiB")
    return out


def _plan_cpu(req: Request) -> Plan:
    """vLLM CPU: the KV cache is exactly VLLM_CPU_KVCACHE_SPACE GiB (the CPU worker takes it as an
    explicit kv_cache_memory_bytes, no profiling), laid out [2, blocks, kv_heads, block, head_dim]
    by CPU_ATTN, which has no FP8 KV cache."""
    arch, context = req.model.arch, req.context
    layout = Layout(1, 1, 1, False)
    per_token = arch.layers * arch.kv_bytes_per_token_per_layer(arch.dtype_bytes)
    tokens = kv_tokens(req.cpu_kvcache_space_gib, per_token, req.engine.block_size, context, req.engine)
    weights = stage_weights_bytes(arch, layout, 0, arch.layers, req.quantization) / GIB
    fp8_kv = req.kv_cache_dtype != "auto"
    fits = tokens >= context and not fp8_kv
    reasons = [f"CPU backend: KV cache = VLLM_CPU_KVCACHE_SPACE = {req.cpu_kvcache_space_gib:g} GiB, "
               f"{int(per_token):,} bytes/token → {tokens:,} tokens",
               f"weights {weights:.2f} GiB live in host memory"]
    if fp8_kv:
        reasons.append(f"does not run: the CPU attention backend has no {req.kv_cache_dtype} KV cache; use auto")
    elif fits:
        reasons.append(f"fits: {tokens / context:g} concurrent {context:,}-token requests")
    else:
        reasons.append(f"does not fit: {tokens:,} tokens cannot hold one {context:,}-token request")
    entry = req.model.entry
    return Plan(fits=fits, model=req.model.name, gpu="cpu", device="cpu", gpus_per_node=1, nodes=req.nodes,
                tensor_parallel_size=1, pipeline_parallel_size=1, data_parallel_size=1,
                enable_expert_parallel=False, max_model_len=context, gpu_memory_utilization=req.gpu_memory_utilization,
                kv_cache_dtype=req.kv_cache_dtype, quantization=req.quantization,
                weights_gib_per_gpu=round(weights, 3), non_torch_gib=0.0, activation_gib=0.0, cuda_graph_gib=0.0,
                kv_cache_gib_per_gpu=float(req.cpu_kvcache_space_gib), kv_bytes_per_token=int(per_token),
                kv_cache_tokens=tokens, max_concurrency=round(tokens / context, 2), reasons=reasons,
                recommended_args=dict(entry.recommended_args) if entry else {"reasoning-parser": "deepseek_r1"},
                sampling=dict(entry.sampling) if entry else {"temperature": 0.6, "top_p": 0.95})


# --------------------------------------------------------------------------- cost and payback


def payback(capex_usd: float | None = None, power_kw: float | None = None,
            power_usd_per_kwh: float | None = None, cloud_usd_per_mtok: float | None = None,
            tokens_per_day: float | None = None) -> Cost:
    """Owning vs renting: yearly power bill against the cloud bill for the same tokens."""
    cost = Cost(capex_usd, power_kw, power_usd_per_kwh, cloud_usd_per_mtok, tokens_per_day)
    if power_kw is not None and power_usd_per_kwh is not None:
        cost.yearly_power_usd = round(power_kw * 24 * 365 * power_usd_per_kwh, 2)
    if cloud_usd_per_mtok is not None and tokens_per_day is not None:
        cost.yearly_cloud_usd = round(tokens_per_day * 365 / 1e6 * cloud_usd_per_mtok, 2)
    if cost.yearly_cloud_usd is not None:
        cost.yearly_saving_usd = round(cost.yearly_cloud_usd - (cost.yearly_power_usd or 0.0), 2)
        if capex_usd is not None and cost.yearly_saving_usd > 0:
            cost.months_to_payback = round(capex_usd / (cost.yearly_saving_usd / 12), 1)
    return cost


def _cost_reasons(cost: Cost) -> list[str]:
    if cost.yearly_saving_usd is None:
        return []
    if cost.months_to_payback is None:
        return [f"cost: no payback — the cloud bill (${cost.yearly_cloud_usd:,.0f}/yr) does not exceed "
                f"power (${cost.yearly_power_usd or 0:,.0f}/yr)"]
    return [f"cost: saves ${cost.yearly_saving_usd:,.0f}/yr against the cloud; pays back "
            f"${cost.capex_usd:,.0f} in {cost.months_to_payback} months"]
