"""Evaluating layouts and choosing one: which TP/PP/DP(+EP) serves a full-length request, and why."""

from __future__ import annotations

import math
from dataclasses import dataclass

from r1deploy.planner.catalog import (
    Architecture,
    GpuSpec,
)
from r1deploy.planner.memory import (
    StageMemory,
    kv_tokens,
    stage_memory,
)
from r1deploy.planner.profiles import (
    KV_DTYPE_BYTES,
    V1,
    EngineProfile,
    Layout,
    ModelSpec,
)

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
        where = f"one {per_node}×{req.gpu.name} node" if nodes == 1 else f"{nodes} {per_node}×{req.gpu.name} nodes"
        out.append((Layout(1, 1, per_node * nodes, True, dp_shares_experts=True),
                    f"DP{per_node * nodes} + expert parallel on {where}: every GPU runs its own attention "
                    f"and KV cache and holds 1/{per_node * nodes} of the experts (vLLM's DeepSeek recipe "
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
    """Nodes of >= 8 big, NVLink/NVSwitch-connected GPUs: where DP+EP beats TP for throughput
    (over several nodes too: one DP+EP engine spans them, vLLM's multi-node data parallel)."""
    return req.devices_per_node >= 8 and req.gpu.fast_interconnect and req.gpu.usable_gib >= 120


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
