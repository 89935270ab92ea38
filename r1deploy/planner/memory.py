"""Memory per GPU of one pipeline stage, as vLLM works it out at startup (weights, reserves, KV)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from r1deploy.planner.catalog import (
    GIB,
    QUANT_BYTES,
    Architecture,
    GpuSpec,
)
from r1deploy.planner.profiles import (
    EngineProfile,
    Layout,
    ModelSpec,
)

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
