"""What a plan adds for speed: FP8 weights and KV where they raise the concurrency the SLO allows,
the batching budget for the SLO, and R1's own recipe (MTP, EPLB, dual-batch overlap, all2all). Pure.

The SLO model is a roofline, deliberately coarse: one decode step reads the GPU's weights and the
batch's KV cache at MEM_EFF of the memory bandwidth and computes 2 × active params per token at
COMPUTE_EFF of the dense tensor-core peak. A step may take PREFILL_SHARE of the TPOT SLO: the rest
is left for the prefill chunks interleaved with decodes. It ranks choices; real figures come from
`r1deploy bench --capacity` (bench/results/h200/slo/).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from r1deploy.planner.catalog import GIB, Architecture, GpuSpec

# Dense tensor-core TFLOP/s (BF16, FP8; 0 = no FP8), vendors' datasheets, without sparsity.
DENSE_TFLOPS = {"H200": (989, 1979), "H20-3e": (148, 296), "H100 SXM": (989, 1979), "H100 PCIe": (756, 1513),
                "H20": (148, 296), "A100 80GB": (312, 0), "A100 40GB": (312, 0), "L40S": (362, 733),
                "RTX 4090": (165, 330), "RTX 3090": (71, 0), "MI300X": (1307, 2615), "MI250X": (383, 0)}
MEM_EFF = 0.85
COMPUTE_EFF = 0.4
PREFILL_SHARE = 0.7
# The TTFT SLO a prefill chunk may take: a chunk of max_num_batched_tokens is one step that every
# running decode waits for; a quarter of the TTFT SLO leaves room for queueing.
CHUNK_SHARE = 0.25
# A dense model's step that carries a prefill chunk is also a decode step for every running request:
# sized within the TPOT SLO, decodes ride on the compute-bound chunk instead of waiting a long step,
# and no memory-bound decode-only step is spent beside it (bench/results/h200/slo-s21/: 32B FP8 on
# an H100, 512 vs 2048 vs vLLM's 8192). Not for MoE: a chunk's tokens spread over the experts keep
# the expert GEMMs memory-bound, so the TTFT rule stands there.
STEP_SHARE = 1.0
MIN_CHUNK = 256
# KV tokens a running request holds on average (a chat turn with its reasoning).
TYPICAL_TOKENS = 2048


@dataclass(frozen=True)
class Slo:
    """The latency SLO a plan is sized for (monitor_slo_* in the spec)."""

    ttft_s: float = 2.0
    tpot_ms: float = 100.0


def active_params(arch: Architecture) -> int:
    """Parameters one token runs through: all of a dense model; the routed experts it picks of a MoE."""
    if not arch.is_moe:
        return arch.total_params()
    moe_layers = arch.layers - arch.dense_layers
    idle = arch.routed_experts - arch.experts_per_token
    return arch.total_params() - moe_layers * idle * 3 * arch.hidden * arch.moe_intermediate


def tflops(gpu: GpuSpec, fp8_compute: bool) -> float:
    bf16, fp8 = DENSE_TFLOPS.get(gpu.name, (100, 0))
    return fp8 if fp8_compute and fp8 else bf16


def _token_flops_per_gpu(arch: Architecture, tp: int, pp: int) -> float:
    return 2 * active_params(arch) / (tp * pp)


def decode_step_ms(arch: Architecture, gpu: GpuSpec, weights_gib: float, kv_bytes_per_token: float,
                   batch: int, tp: int = 1, pp: int = 1, fp8_compute: bool = False,
                   context_tokens: int = TYPICAL_TOKENS) -> float:
    """One decode step of ``batch`` running requests, each holding ``context_tokens`` of KV, on one GPU
    (roofline, see the module doc)."""
    bytes_read = weights_gib * GIB + batch * context_tokens * kv_bytes_per_token
    mem_s = bytes_read / (gpu.bandwidth_tbs * 1e12 * MEM_EFF)
    compute_s = batch * _token_flops_per_gpu(arch, tp, pp) / (tflops(gpu, fp8_compute) * 1e12 * COMPUTE_EFF)
    return (mem_s + compute_s) * 1000


def slo_batch(arch: Architecture, gpu: GpuSpec, weights_gib: float, kv_bytes_per_token: float, slo: Slo,
              tp: int = 1, pp: int = 1, fp8_compute: bool = False, context_tokens: int = TYPICAL_TOKENS,
              share: float = PREFILL_SHARE) -> int:
    """The largest decode batch whose step stays within ``share`` of the TPOT SLO (0: none): PREFILL_SHARE
    where prefill chunks share the steps, all of it on a decode-only node (r1deploy/planner/pd_split.py)."""
    budget = slo.tpot_ms * share
    lo, hi = 0, 8192
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if decode_step_ms(arch, gpu, weights_gib, kv_bytes_per_token, mid, tp, pp, fp8_compute, context_tokens) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def slo_concurrency(kv_tokens: int, batch: int) -> float:
    """Requests one replica runs within the SLO: what its KV cache holds, at most the SLO's batch."""
    return min(kv_tokens / TYPICAL_TOKENS, float(batch))


def _pow2_floor(x: float) -> int:
    return 2 ** int(math.log2(max(x, 1)))


def batching_budget(arch: Architecture, gpu: GpuSpec, slo: Slo, batch: int, tp: int = 1, pp: int = 1,
                    fp8_compute: bool = False) -> tuple[dict[str, int], list[str]]:
    """max_num_batched_tokens: the prefill chunk one step may hold within CHUNK_SHARE of the TTFT
    SLO and, for a dense model, a step within STEP_SHARE of the TPOT SLO; max_num_seqs: twice the SLO's
    decode batch (bursts queue for TTFT's slack instead of slowing every running request past the TPOT
    SLO). vLLM wants max_num_batched_tokens >= max_num_seqs: the chunk is never below it."""
    ms_per_token = _token_flops_per_gpu(arch, tp, pp) / (tflops(gpu, fp8_compute) * 1e12 * COMPUTE_EFF) * 1000
    by_ttft = _pow2_floor(slo.ttft_s * 1000 * CHUNK_SHARE / ms_per_token)
    by_tpot = _pow2_floor(slo.tpot_ms * STEP_SHARE / ms_per_token)
    dense_step = not arch.is_moe and by_tpot < by_ttft
    seqs = min(1024, max(64, 2 ** math.ceil(math.log2(max(2 * batch, 1)))))
    floor = max(MIN_CHUNK, seqs if batch else 0) if not arch.is_moe else 2048
    chunk = min(16384, max(floor, by_tpot if dense_step else by_ttft))
    share = (f"a step of ~{chunk * ms_per_token:.0f} ms with its decodes, within the TPOT SLO: decodes ride on "
             "the compute-bound chunk" if dense_step else f"within {CHUNK_SHARE:.0%} of the TTFT SLO")
    if batch == 0:
        return {"max-num-batched-tokens": chunk}, [
            f"batching: max_num_batched_tokens {chunk:,} (a prefill chunk of ~{chunk * ms_per_token:.0f} ms); "
            f"max_num_seqs left to vLLM: one decode step of this layout takes longer than {PREFILL_SHARE:.0%} of "
            f"the TPOT SLO ({slo.tpot_ms:g} ms), so no batch meets it (a looser monitor_slo_tpot_p99_ms, or more GPUs)"]
    why = [f"batching for the SLO (TTFT p99 {slo.ttft_s:g} s, TPOT p99 {slo.tpot_ms:g} ms): max_num_batched_tokens "
           f"{chunk:,} (a prefill chunk of ~{chunk * ms_per_token:.0f} ms, {share}); "
           f"max_num_seqs {seqs} (2 × the {batch}-request decode batch whose step stays within "
           f"{PREFILL_SHARE:.0%} of the TPOT SLO)"]
    return {"max-num-batched-tokens": chunk, "max-num-seqs": seqs}, why


# --------------------------------------------------------------------------- R1's own recipe

MTP_TOKENS = {"throughput": 1, "latency": 3}
ALL2ALL = {"throughput": "deepep_high_throughput", "latency": "deepep_low_latency"}
# vLLM's default decode-token threshold for DBO is 32 (ParallelConfig.dbo_decode_token_threshold).
DBO_DECODE_TOKENS = 32
# Keys that need DeepEP in the vLLM venv (install_ep_kernels): ep_kernels.plan_engine_args drops
# them where it is not installed.
DEEPEP_KEYS = ("all2all-backend", "enable-dbo", "dbo-decode-token-threshold")


def mtp_layers(config: dict[str, Any] | None) -> int:
    return int((config or {}).get("num_nextn_predict_layers") or 0)


def r1_recipe(arch: Architecture, config: dict[str, Any] | None, gpu: GpuSpec, tp: int, pp: int, dp: int,
              ep: bool, dp_shares_experts: bool, prefer: str) -> tuple[dict[str, Any], list[str]]:
    """MTP, EPLB, DBO and the all2all backend for a MoE model with its layout, each with its reason."""
    args: dict[str, Any] = {}
    why: list[str] = []
    if not arch.is_moe or gpu.vendor != "nvidia":
        return args, why
    if mtp_layers(config):
        n = MTP_TOKENS.get(prefer, 1)
        if pp > 1:
            why.append("MTP not used: vLLM's MTP drafter runs on the last pipeline stage only; "
                       f"a TP{tp} × PP{pp} layout would idle the others while it drafts")
        else:
            args["speculative-config"] = {"method": "mtp", "num_speculative_tokens": n}
            why.append(f"MTP speculative decoding, {n} token(s) a step ({prefer}-leaning: "
                       + ("each accepted draft saves a full decode step at small batch" if n > 1 else
                          "one draft keeps the batch's extra verify work small")
                       + f"); the checkpoint's {mtp_layers(config)} MTP layer loads with it (~1/{arch.layers} "
                       "more weights per GPU)")
    ep_ranks = tp * (dp if dp_shares_experts else 1)
    if ep and dp_shares_experts and ep_ranks > 1 and arch.routed_experts % ep_ranks == 0:
        args["enable-eplb"] = True
        args["eplb-config"] = {"window_size": 1000, "step_interval": 3000, "num_redundant_experts": ep_ranks}
        why.append(f"EPLB: {arch.routed_experts} experts over {ep_ranks} EP ranks, one redundant expert per rank "
                   "(the hot ones), rebalanced every 3000 steps from a 1000-step window")
        args["all2all-backend"] = ALL2ALL.get(prefer, ALL2ALL["throughput"])
        why.append(f"all2all {args['all2all-backend']}: DeepEP's "
                   + ("batched kernels for prefill-heavy throughput" if prefer != "latency" else
                      "low-latency kernels (CUDA graphs) for decode-heavy latency"))
        args["enable-dbo"] = True
        args["dbo-decode-token-threshold"] = DBO_DECODE_TOKENS
        why.append("dual-batch overlap: one micro-batch's all-to-all under the other's compute (vLLM 0.26 runs "
                   "it on the V1 model runner; needs DeepEP)")
    elif ep:
        why.append(f"EPLB and DBO not used: experts are split over the TP{tp} group of each replica, not a "
                   "DP + EP engine (vLLM balances and overlaps the DP + EP all-to-all)")
    return args, why
