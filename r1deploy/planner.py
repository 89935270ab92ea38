"""Capacity planner: will a model fit, how to lay it out, what it costs — before touching a host.

The memory model follows what vLLM does at startup. It loads the weights, runs one profile
step (peak activations: a prefill of ``max_num_batched_tokens`` through one layer's MLP, or
the sampler over ``max_num_seqs`` × vocab logits, whichever is larger), counts memory held
outside torch (NCCL, cuBLAS, custom all-reduce), subtracts a CUDA-graph estimate where that
generation does (0.21–0.25's V1 model runner; 0.26's V2 model runner captures graphs only
after the KV cache is sized), and gives the rest of ``gpu_memory_utilization × memory`` to
the KV cache, in blocks of 16 tokens (64 for MLA).
Every worker does this and the engine takes the smallest pool, so the plan works out each
pipeline stage and keeps the worst one. ``bench/planner_agreement.py`` checks the model
against KV sizes vLLM printed in public logs.

Entry points: ``plan()`` (pure), ``plan_for_spec()`` (a host's Spec plus real GPU facts),
``Plan.engine_args()`` / ``Plan.engine_env()`` for rendering the vLLM config.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from r1deploy.catalog import (
    GIB,
    MODELS,
    QUANT_BYTES,
    Architecture,
    GpuSpec,
    ModelEntry,
    custom_gpu,
    find_gpu,
    find_model,
)
from r1deploy.layout_rules import layout_problems

KV_DTYPE_BYTES = {"auto": None, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


# --------------------------------------------------------------------------- engine profile


@dataclass(frozen=True)
class EngineProfile:
    """How one vLLM generation sizes its KV cache. ``None`` means "vLLM's default for this GPU".

    The default, ``V1``, is the generation the project installs (vLLM 0.26.0, V1 engine with
    the V2 model runner), calibrated on a real H200 (tests/data/h200_vllm_observations.json).
    """

    name: str = "v1"
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    # CUDA-graph memory subtracted before sizing the KV cache. 0.26's V2 model runner sizes
    # the KV cache first and captures graphs afterwards (no "Estimated CUDA graph memory"
    # line; the 0.89 GiB of graphs for a 7B come out of the headroom above the utilization).
    cuda_graph_gib: float = 0.0
    # Peak bytes per logit of the dummy sampler run over max_num_seqs × vocab logits. 0.26's
    # V2 runner skips top-k, top-p and logprobs in the profile: the bf16 logits of the LM head
    # plus the float32 copy the sampler works on, ~6 B (1024 × 152,064 logits = 0.87 GiB, below
    # the forward peak of every H200 run). The V1 runner of 0.11–0.25 also computed logprobs:
    # ~38 B (float32 logits, probabilities, log-probabilities, sorted values and int64
    # indices): 1024 seqs took 4.76 GiB with a 128,256 vocab, 5.56 GiB with 151,936 and 7.38
    # GiB with 201,088 on H100. V0 sorted for top-p/top-k as well (256 × 151,936 logits took
    # 1.39 GiB); early V1 with FlashInfer sampling needed ~10 B.
    sampler_bytes_per_logit: float = 6.0
    # Memory outside torch's allocator that grows during the profile on one GPU (cuBLAS and
    # attention workspaces): 0.22 GiB with 0.26 on H200 (all nine runs), 0.13 on H100 before.
    non_torch_gib: float = 0.22
    block_size: int = 16
    mla_block_size: int = 64  # FlashMLA pages
    # V1 prints int(max_concurrency × max_model_len); V0 printed num_blocks × block_size.
    tokens_from_concurrency: bool = True

    def batched_tokens(self, gpu: GpuSpec, max_model_len: int) -> int:
        if self.max_num_batched_tokens:
            return self.max_num_batched_tokens
        if self.name == "v0":  # chunked prefill only above 32K: one prefill of the whole context
            return max(max_model_len, 2048) if max_model_len <= 32768 else 2048
        return 8192 if _big_gpu(gpu) else 2048

    def num_seqs(self, gpu: GpuSpec) -> int:
        if self.max_num_seqs:
            return self.max_num_seqs
        return 1024 if self.name != "v0" and _big_gpu(gpu) else 256


def _big_gpu(gpu: GpuSpec) -> bool:
    # vLLM's serve defaults: 8192 batched tokens / 1024 seqs on >= 70 GiB GPUs other than A100.
    return gpu.usable_gib >= 70 and "A100" not in gpu.name


# 0.26 (the version the project installs): V1 engine, V2 model runner.
V1 = EngineProfile()
# 0.21–0.25: V1 model runner; subtracts an estimate of CUDA-graph memory before sizing the KV
# cache (the estimates vLLM logs for 8B–120B models on H100 range -0.45..1.03 GiB,
# llm-d-benchmark) and profiles the sampler with logprobs.
V1_GRAPH_RESERVE = EngineProfile(name="v1-0.21", cuda_graph_gib=0.25, sampler_bytes_per_logit=38.0,
                                 non_torch_gib=0.15)
# 0.11–0.20: CUDA-graph memory measured only after the KV cache is allocated.
V1_NO_GRAPH_RESERVE = EngineProfile(name="v1-0.11", sampler_bytes_per_logit=38.0, non_torch_gib=0.15)
# 0.8–0.10: V1 engine, sampler profiled without logprobs (FlashInfer top-p/top-k).
V1_EARLY = EngineProfile(name="v1-early", sampler_bytes_per_logit=10.0, non_torch_gib=0.15)
V0 = EngineProfile(name="v0", sampler_bytes_per_logit=38.0, non_torch_gib=0.15, mla_block_size=16,
                   tokens_from_concurrency=False)
ENGINES = {e.name: e for e in (V1, V1_GRAPH_RESERVE, V1_NO_GRAPH_RESERVE, V1_EARLY, V0)}


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: Architecture
    entry: ModelEntry | None = None

    @classmethod
    def from_catalog(cls, name: str) -> ModelSpec:
        entry = find_model(name)
        if entry is None:
            raise KeyError(f"unknown model {name!r}; known: {', '.join(m.name for m in MODELS)}")
        return cls(entry.name, Architecture.from_config(entry.config), entry)

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> ModelSpec:
        return cls(name, Architecture.from_config(config), find_model(name))

    @property
    def params_b(self) -> float:
        return self.arch.total_params() / 1e9


@dataclass(frozen=True)
class Layout:
    tp: int
    pp: int
    dp: int
    ep: bool
    # DP ranks inside one engine that share the experts (DP+EP); otherwise replicas are
    # independent and each holds its own copy of every expert.
    dp_shares_experts: bool = False

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp


@dataclass
class Cost:
    capex_usd: float | None
    power_kw: float | None
    power_usd_per_kwh: float | None
    cloud_usd_per_mtok: float | None
    tokens_per_day: float | None
    yearly_power_usd: float | None = None
    yearly_cloud_usd: float | None = None
    yearly_saving_usd: float | None = None
    months_to_payback: float | None = None


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
    recommended_args: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, float] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("overrides")
        data["engine_args"] = self.engine_args()
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


# --------------------------------------------------------------------------- memory per GPU


@dataclass(frozen=True)
class StageMemory:
    weights_gib: float
    non_torch_gib: float
    activation_gib: float
    cuda_graph_gib: float
    kv_gib: float
    kv_bytes_per_token: float
    layers: int


def linear_bytes(arch: Architecture, quantization: str | None) -> float:
    if quantization and quantization != "none":
        return QUANT_BYTES[quantization]
    return QUANT_BYTES[arch.linear_quant] if arch.linear_quant else arch.dtype_bytes


def pp_partition(layers: int, pp: int) -> list[int]:
    """vLLM's even split; the remainder goes to the stages before the last."""
    parts = [layers // pp] * pp
    for i in range(2, layers % pp + 2):
        parts[-i] += 1
    return parts


def stage_weights_bytes(arch: Architecture, layout: Layout, stage: int, layers: int,
                        quantization: str | None) -> float:
    """Weights one GPU of a pipeline stage holds: TP splits dense math, EP splits experts."""
    lin = linear_bytes(arch, quantization)
    wide = arch.dtype_bytes
    first_layer = sum(pp_partition(arch.layers, layout.pp)[:stage])
    dense = max(0, min(layers, arch.dense_layers - first_layer)) if arch.is_moe else layers
    moe = layers - dense
    sharded, replicated = arch.attention_params()
    total = layers * (sharded * lin / layout.tp + replicated * lin + 2 * arch.hidden * wide)
    total += dense * arch.dense_mlp_params() * lin / layout.tp
    if moe:
        expert_ranks = layout.tp * layout.dp if layout.ep and layout.dp_shares_experts else layout.tp
        total += moe * (arch.expert_params() * lin / expert_ranks
                        + arch.shared_expert_params() * lin / layout.tp + arch.router_params() * wide)
    vocab_part = arch.vocab * arch.hidden * wide / layout.tp
    if stage == 0:
        total += vocab_part
    if stage == layout.pp - 1 and not arch.tied_embeddings:
        total += vocab_part
    return total


def non_torch_gib(layout: Layout, nodes_spanned: int, p2p: bool, single_gpu_gib: float = 0.15) -> float:
    """Memory outside torch's allocator: cuBLAS workspaces, NCCL and custom all-reduce buffers.

    vLLM's own lines: 0.13 GiB on one H100 (0.22 on one H200 with 0.26: ``single_gpu_gib``,
    per engine generation); TP2 0.55 on H100 (custom all-reduce IPC buffers, which need GPU
    peer-to-peer) but 0.25 on RTX 4090s without P2P; TP8 × PP2 over two nodes 2.53 (NCCL
    network proxies and buffers).
    """
    ranks = layout.tp * layout.pp * (layout.dp if layout.dp_shares_experts else 1)
    gib = single_gpu_gib
    if ranks > 1:
        gib += (0.4 if p2p else 0.1) + 0.03 * (ranks - 2)
    if nodes_spanned > 1:
        gib += 1.5
    if layout.dp_shares_experts and layout.dp > 1:
        gib += 1.0  # all-to-all dispatch/combine buffers of expert parallelism across DP ranks
    return gib


def activation_gib(arch: Architecture, layout: Layout, gpu: GpuSpec, engine: EngineProfile,
                   max_model_len: int, last_stage: bool) -> float:
    """Peak of the profile run: one prefill chunk through a layer, or the sampler, whichever is larger.

    Forward: ``max_num_batched_tokens`` tokens through one layer's MLP hold the gate+up output
    (2 × intermediate), the activated half (1 × intermediate) and ~3 hidden-sized buffers
    (residual, norm, attention output), in the model dtype. On an H200 with 0.26 at 8,192
    tokens this predicts 1.03 / 0.84 / 0.87 / 1.50 GiB for R1-Distill-Qwen-7B / Llama-8B /
    Qwen-14B / Qwen-32B; vLLM measured 1.06 / 0.88 / 0.90 / 1.53 with a warm compile cache
    (1.13 / 1.10 / 1.61 / 1.61 on the first, compiling start). Sampler: max_num_seqs × vocab
    logits × the generation's bytes per logit, on the last pipeline stage only.
    """
    tokens = engine.batched_tokens(gpu, max_model_len)
    mlp = arch.intermediate / layout.tp
    if arch.is_moe:
        mlp = max(mlp, arch.experts_per_token * arch.moe_intermediate / layout.tp)
    forward = tokens * (3 * mlp + 3 * arch.hidden) * arch.dtype_bytes
    sampler = engine.num_seqs(gpu) * arch.vocab * engine.sampler_bytes_per_logit if last_stage else 0
    return max(forward, sampler) / GIB


def stage_memory(model: ModelSpec, gpu: GpuSpec, layout: Layout, stage: int, *, utilization: float,
                 kv_dtype_bytes: float, max_model_len: int, engine: EngineProfile, quantization: str | None,
                 nodes_spanned: int, cuda_graphs: bool) -> StageMemory:
    arch = model.arch
    layers = pp_partition(arch.layers, layout.pp)[stage]
    weights = stage_weights_bytes(arch, layout, stage, layers, quantization) / GIB
    other = non_torch_gib(layout, nodes_spanned, gpu.fast_interconnect, engine.non_torch_gib)
    act = activation_gib(arch, layout, gpu, engine, max_model_len, stage == layout.pp - 1)
    graphs = engine.cuda_graph_gib if cuda_graphs else 0.0
    kv = utilization * gpu.usable_gib - weights - other - act - graphs
    per_token = layers * arch.kv_bytes_per_token_per_layer(kv_dtype_bytes, layout.tp)
    return StageMemory(weights, other, act, graphs, kv, per_token, layers)


def kv_tokens(kv_gib: float, per_token: float, block_size: int, max_model_len: int,
              engine: EngineProfile) -> int:
    if kv_gib <= 0 or per_token <= 0:
        return 0
    blocks = int(kv_gib * GIB // (per_token * block_size))
    if not engine.tokens_from_concurrency:
        return blocks * block_size
    concurrency = blocks / math.ceil(max_model_len / block_size)
    return int(concurrency * max_model_len)


# --------------------------------------------------------------------------- evaluating a layout


@dataclass(frozen=True)
class Request:
    """Everything a plan depends on besides the layout."""

    model: ModelSpec
    gpu: GpuSpec
    gpus_per_node: int
    nodes: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    kv_cache_dtype: str = "auto"
    quantization: str | None = None
    engine: EngineProfile = V1
    cuda_graphs: bool = True
    device: str = "cuda"
    cpu_kvcache_space_gib: float = 4.0
    prefer: str = "throughput"

    @property
    def devices_per_node(self) -> int:
        return self.gpus_per_node * self.gpu.devices_per_package

    @property
    def context(self) -> int:
        if self.max_model_len:
            return self.max_model_len
        default = self.model.entry.default_max_model_len if self.model.entry else 32768
        return min(default, self.model.arch.max_position)

    def kv_dtype_bytes(self) -> float:
        return KV_DTYPE_BYTES.get(self.kv_cache_dtype) or self.model.arch.dtype_bytes


@dataclass(frozen=True)
class Evaluation:
    layout: Layout
    stages: list[StageMemory]
    tokens: int  # per replica
    block_size: int

    @property
    def worst(self) -> StageMemory:
        return min(self.stages, key=lambda s: s.kv_gib)

    @property
    def weights_fit(self) -> bool:
        return all(s.kv_gib > 0 for s in self.stages)


def evaluate(req: Request, layout: Layout, context: int) -> Evaluation:
    ranks = layout.tp * layout.pp * (layout.dp if layout.dp_shares_experts else 1)
    nodes_spanned = max(1, math.ceil(ranks / req.devices_per_node))
    block = req.engine.mla_block_size if req.model.arch.is_mla else req.engine.block_size
    stages = [stage_memory(req.model, req.gpu, layout, i, utilization=req.gpu_memory_utilization,
                           kv_dtype_bytes=req.kv_dtype_bytes(), max_model_len=context, engine=req.engine,
                           quantization=req.quantization, nodes_spanned=nodes_spanned,
                           cuda_graphs=req.cuda_graphs)
              for i in range(layout.pp)]
    tokens = min(kv_tokens(s.kv_gib, s.kv_bytes_per_token, block, context, req.engine) for s in stages)
    return Evaluation(layout, stages, tokens, block)


def _valid_tp(arch: Architecture, tp: int) -> bool:
    return arch.heads % tp == 0 and (arch.is_mla or arch.kv_heads % tp == 0 or tp % arch.kv_heads == 0)


def candidate_layouts(req: Request) -> list[tuple[Layout, str]]:
    """Layouts in order of preference, each with why it is tried."""
    arch, per_node, nodes = req.model.arch, req.devices_per_node, req.nodes
    tps = [t for t in (1, 2, 4, 8, 16) if t <= per_node and _valid_tp(arch, t)]
    out: list[tuple[Layout, str]] = []
    if arch.is_moe and _h200_class_node(req) and req.prefer == "throughput":
        out.append((Layout(1, 1, per_node, True, dp_shares_experts=True),
                    f"DP{per_node} + expert parallel on one {per_node}×{req.gpu.name} node: every GPU runs "
                    f"its own attention and KV cache and holds 1/{per_node} of the experts (vLLM recipe "
                    "for throughput; use prefer=latency for TP8)"))
    ordered = tps if req.prefer == "throughput" else list(reversed(tps))
    for tp in ordered:
        why = "smallest tensor-parallel group that holds the weights, replicas for the rest" \
            if req.prefer == "throughput" else "tensor parallel across the whole node for latency"
        out.append((Layout(tp, 1, (per_node // tp) * nodes, arch.is_moe), why))
    top = max(tps)
    for pp in range(2, nodes + 1):
        if nodes % pp == 0:
            out.append((Layout(top, pp, nodes // pp, arch.is_moe),
                        f"TP{top} inside each node, pipeline parallel across {pp} nodes (weights exceed one node)"))
    return out


def _h200_class_node(req: Request) -> bool:
    """One node of >= 8 big, NVLink/NVSwitch-connected GPUs: where DP+EP beats TP for throughput."""
    return (req.nodes == 1 and req.devices_per_node >= 8 and req.gpu.fast_interconnect
            and req.gpu.usable_gib >= 120)


def _fits(ev: Evaluation, context: int) -> bool:
    return ev.weights_fit and ev.tokens >= context


# A throughput replica should batch at least this many full-length requests: one that holds
# one or two is batch-starved (decode speed grows with the batch), and a larger TP group that
# shares the weights gives far more KV cache (Llama-70B on 8×H100: TP2 1.6 requests per
# replica, TP4 16).
MIN_REPLICA_REQUESTS = 4


def _roomy(req: Request, ev: Evaluation, context: int) -> bool:
    if req.prefer != "throughput" or ev.layout.dp_shares_experts or ev.layout.pp > 1:
        return True
    return ev.tokens >= MIN_REPLICA_REQUESTS * context


def choose(req: Request, fixed: Layout | None) -> tuple[Evaluation, int, list[str]]:
    """The first layout that serves one full-length request (for throughput: a few per replica,
    when some layout can); else the roomiest, with the reason."""
    context = req.context
    if fixed is not None:
        return _shrink_context(req, evaluate(req, fixed, context), context, ["layout fixed by the caller (spec or flags)"])
    tried = [(evaluate(req, layout, context), why) for layout, why in candidate_layouts(req)]
    cramped = [ev for ev, _ in tried if _fits(ev, context) and not _roomy(req, ev, context)]
    for ev, why in tried:
        if _fits(ev, context) and _roomy(req, ev, context):
            if cramped:
                small = cramped[0]
                why += (f"; TP{small.layout.tp} would fit only {small.tokens / context:.1f} full-length requests "
                        f"per replica (fewer than {MIN_REPLICA_REQUESTS}), TP{ev.layout.tp} {ev.tokens / context:.1f}")
            return ev, context, [why]
    for ev, why in tried:
        if _fits(ev, context):
            return ev, context, [why]
    best, why = max(tried, key=lambda t: (t[0].weights_fit, t[0].worst.kv_gib))
    return _shrink_context(req, best, context, [why])


def _shrink_context(req: Request, ev: Evaluation, context: int, why: list[str]) -> tuple[Evaluation, int, list[str]]:
    """Without an explicit max_model_len, trade context for fitting (vLLM would refuse to start)."""
    if req.max_model_len or _fits(ev, context) or not ev.weights_fit:
        return ev, context, why
    shorter = context
    while shorter > 2048 and not _fits(ev, shorter):
        shorter //= 2
        ev = evaluate(req, ev.layout, shorter)
    if _fits(ev, shorter):
        why.append(f"context reduced from {context:,} to {shorter:,} tokens so one full-length request fits")
        return ev, shorter, why
    return ev, context, why


# --------------------------------------------------------------------------- planning


def plan(model: ModelSpec, gpu: GpuSpec, gpus_per_node: int, nodes: int = 1, *,
         max_model_len: int | None = None, gpu_memory_utilization: float = 0.9, kv_cache_dtype: str = "auto",
         quantization: str | None = None, tensor_parallel_size: int | None = None,
         pipeline_parallel_size: int | None = None, data_parallel_size: int | None = None,
         enable_expert_parallel: bool | None = None, prefer: str = "throughput", engine: EngineProfile = V1,
         cuda_graphs: bool = True, device: str = "cuda", cpu_kvcache_space_gib: float = 4.0,
         costs: dict[str, float | None] | None = None, overrides: dict[str, Any] | None = None,
         target_concurrency: int | None = None, suggest: bool = True) -> Plan:
    """A pure function: the memory plan of ``model`` on ``nodes`` × ``gpus_per_node`` × ``gpu``."""
    quant = None if quantization in (None, "none") else quantization
    req = Request(model, gpu, gpus_per_node, nodes, max_model_len, gpu_memory_utilization, kv_cache_dtype,
                  quant, engine, cuda_graphs, device, cpu_kvcache_space_gib, prefer)
    if device == "cpu":
        result = _plan_cpu(req)
    else:
        fixed = _fixed_layout(req, tensor_parallel_size, pipeline_parallel_size, data_parallel_size,
                              enable_expert_parallel)
        ev, context, why = choose(req, fixed)
        result = _to_plan(req, ev, context, why)
    result.overrides = dict(overrides or {})
    if costs:
        result.cost = payback(**costs)
        result.reasons.extend(_cost_reasons(result.cost))
    if suggest and not result.fits:
        result.suggestions = suggestions(req, result)
    if target_concurrency:
        _check_target(req, result, target_concurrency)
    return result


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
               + (" + EP" if layout.ep else "") + f": {why[0]}", *(f"does not run: {w}" for w in impossible), *why[1:]]
    reasons += _memory_reasons(req, ev, context, fits or (bool(impossible) and _fits(ev, context)))
    reasons += _hardware_reasons(req, layout)
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
        recommended_args=dict(entry.recommended_args) if entry else {"reasoning-parser": "deepseek_r1"},
        sampling=dict(entry.sampling) if entry else {"temperature": 0.6, "top_p": 0.95},
    )


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


# --------------------------------------------------------------------------- when it does not fit


def suggestions(req: Request, failed: Plan) -> list[str]:
    out = []
    ev = evaluate(req, Layout(failed.tensor_parallel_size, failed.pipeline_parallel_size,
                              failed.data_parallel_size, failed.enable_expert_parallel), failed.max_model_len)
    if ev.weights_fit and ev.tokens >= 2048:
        fitting = 2 ** int(math.log2(ev.tokens))
        out.append(f"shorter context: max_model_len {fitting:,} fits ({ev.tokens:,} KV tokens)")
    if req.gpu_memory_utilization < 0.95:
        p = _quiet(req, gpu_memory_utilization=0.95)
        if p.fits:
            out.append(f"more memory for vLLM: gpu_memory_utilization 0.95 fits (TP{p.tensor_parallel_size}, "
                       f"{p.max_concurrency:g} concurrent {p.max_model_len:,}-token requests)")
    out += _quant_suggestions(req)
    out += _node_suggestions(req)
    out += _distill_suggestions(req)
    return out


def _quiet(req: Request, **changes: Any) -> Plan:
    r = replace(req, **changes)
    return plan(r.model, r.gpu, r.gpus_per_node, r.nodes, max_model_len=r.max_model_len,
                gpu_memory_utilization=r.gpu_memory_utilization, kv_cache_dtype=r.kv_cache_dtype,
                quantization=r.quantization, prefer=r.prefer, engine=r.engine, cuda_graphs=r.cuda_graphs,
                suggest=False)


def _quant_suggestions(req: Request) -> list[str]:
    current = linear_bytes(req.model.arch, req.quantization)
    schemes = ["fp8_dynamic"] if req.gpu.fp8 else ["w8a8_int8"]
    for scheme in [*schemes, "w4a16"]:
        if QUANT_BYTES[scheme] >= current:
            continue
        p = _quiet(req, quantization=scheme)
        if p.fits:
            return [f"quantize: quant_scheme={scheme} fits on this hardware (weights {p.weights_gib_per_gpu} "
                    f"GiB/GPU, {p.max_concurrency:g} concurrent {p.max_model_len:,}-token requests)"]
    return []


def _node_suggestions(req: Request) -> list[str]:
    for nodes in range(req.nodes + 1, req.nodes + 9):
        p = _quiet(req, nodes=nodes)
        if p.fits:
            return [f"more nodes: {nodes} × {req.gpus_per_node} × {req.gpu.name} fits "
                    f"(TP{p.tensor_parallel_size} × PP{p.pipeline_parallel_size}, "
                    f"{p.max_concurrency:g} concurrent {p.max_model_len:,}-token requests)"]
    return []


def _distill_suggestions(req: Request) -> list[str]:
    out = []
    smaller = [m for m in MODELS if m.name != req.model.name
               and Architecture.from_config(m.config).total_params() < req.model.arch.total_params()]
    for entry in smaller:
        p = _quiet(req, model=ModelSpec.from_catalog(entry.name), quantization=None, max_model_len=None)
        if p.fits:
            out.append(f"smaller model: {entry.name} fits (TP{p.tensor_parallel_size}, "
                       f"{p.max_model_len:,}-token context, {p.max_concurrency:g} concurrent requests)")
            if len(out) == 2:
                break
    return out


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


# --------------------------------------------------------------------------- from a deployment spec


SPEC_ARG_KEYS = {
    "tensor_parallel_size": "tensor-parallel-size", "pipeline_parallel_size": "pipeline-parallel-size",
    "data_parallel_size": "data-parallel-size", "enable_expert_parallel": "enable-expert-parallel",
    "max_model_len": "max-model-len", "reasoning_parser": "reasoning-parser",
    "enable_prefix_caching": "enable-prefix-caching", "enable_chunked_prefill": "enable-chunked-prefill",
    "max_num_seqs": "max-num-seqs",
}


def plan_for_spec(spec: Any, gpu_name: str | None = None, gpu_count: int | None = None,
                  gpu_memory_mib: int | None = None, model_config: dict | None = None) -> Plan:
    """Plan one host's spec. Real GPU facts (nvidia-smi name/count/memory) beat spec.plan_*;
    ``model_config`` (a real config.json) beats the catalog lookup by spec.model.repo_id."""
    model = _spec_model(spec, model_config)
    v = spec.vllm
    costs = {k: getattr(spec.plan, k) for k in
             ("capex_usd", "power_kw", "power_usd_per_kwh", "cloud_usd_per_mtok", "tokens_per_day")}
    common = dict(max_model_len=v.max_model_len, gpu_memory_utilization=v.gpu_memory_utilization,
                  target_concurrency=spec.plan.target_concurrency,
                  kv_cache_dtype=v.kv_cache_dtype, quantization=spec.quant.scheme,
                  costs=costs if any(x is not None for x in costs.values()) else None,
                  overrides=spec_overrides(spec))
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
                enable_expert_parallel=v.enable_expert_parallel, **common)


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
