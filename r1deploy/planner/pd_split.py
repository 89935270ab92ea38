"""How many of a P/D set's replicas prefill and how many decode, from the workload (issue 25). Pure.

The same roofline as the SLO plan (recipe.py), deliberately coarse: it ranks splits, `r1deploy bench`
measures them. A prefill replica is compute-bound: a prompt of I tokens costs 2 x active params per
token plus causal attention (each token attends to I/2 earlier ones on average), at COMPUTE_EFF of
the dense tensor-core peak of all its GPUs. A decode replica is bandwidth-bound: its batch is the
largest whose step reads the weights and every running request's KV (I + O/2 tokens on average)
within DECODE_SHARE of the TPOT SLO, at most what its KV cache holds. A request costs I/P seconds
of a prefill replica and O/D of a decode replica, so x prefill and y decode replicas serve
min(x P/I, y D/O) requests per second; the split is the x:y (x + y = replicas, both >= 1) that
serves the most, ties to more decode (its steps set the TPOT everyone sees).

A sanity check on the scale: DeepSeek's own P/D service (its inference system overview, 2025: H800
nodes, 73.7k input tokens/s per prefill node counting prefix-cache hits, 14.8k output tokens/s per
decode node at ~20 tokens/s per user). This model says ~79k prompt tokens/s per 8×H200 prefill replica
and ~30k output tokens/s per decode replica at a 50 ms TPOT: about 1.4× DeepSeek's decode figure after
H200's 1.43× memory bandwidth, so it leans a little toward too few decode replicas.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from r1deploy.planner.catalog import Architecture, GpuSpec
from r1deploy.planner.core import Plan
from r1deploy.planner.recipe import COMPUTE_EFF, Slo, active_params, decode_step_ms, slo_batch, tflops

# A decode-only replica's steps carry no prefill chunk (its KV arrives over NIXL): nearly all the TPOT
# SLO is the step's, a tenth left for KV arrivals and scheduling (the mixed plan keeps PREFILL_SHARE).
DECODE_SHARE = 0.9


@dataclass(frozen=True)
class Workload:
    input_tokens: int  # mean prompt length
    output_tokens: int  # mean answer length (R1: the reasoning included)


@dataclass(frozen=True)
class ReplicaRates:
    """What one replica of the plan's layout does on each side."""

    prefill_tokens_s: float  # prompt tokens per second
    decode_tokens_s: float  # output tokens per second within the TPOT SLO
    decode_batch: int  # running requests per decode engine at that rate
    engines: int  # decode engines (DP ranks or TP×PP replicas) per replica


@dataclass(frozen=True)
class PdSplit:
    replicas: int
    prefill: int
    decode: int
    requests_per_s: float
    bottleneck: str  # "prefill", "decode" or "none" (no split possible)
    rates: ReplicaRates | None
    reasons: list[str]

    @property
    def ratio(self) -> str:
        return f"{self.prefill}:{self.decode}"

    def to_dict(self) -> dict:
        return {"replicas": self.replicas, "prefill": self.prefill, "decode": self.decode,
                "requests_per_s": round(self.requests_per_s, 3), "bottleneck": self.bottleneck,
                "rates": asdict(self.rates) if self.rates else None, "reasons": list(self.reasons)}


def fp8_compute(arch: Architecture, gpu: GpuSpec, plan: Plan) -> bool:
    return gpu.fp8 and (plan.quantization == "fp8" or arch.linear_quant == "fp8"
                        or plan.recommended_args.get("quantization") == "fp8")


def prefill_flops_per_token(arch: Architecture, input_tokens: int) -> float:
    """Linear layers (2 x active params) plus causal attention at the prompt's mean position."""
    if arch.is_mla:
        qk, v = arch.qk_nope_head_dim + arch.qk_rope_head_dim, arch.v_head_dim
    else:
        qk = v = arch.head_dim
    attention = 2 * arch.layers * arch.heads * (input_tokens / 2) * (qk + v)
    return 2 * active_params(arch) + attention


def replica_rates(arch: Architecture, gpu: GpuSpec, plan: Plan, work: Workload, slo: Slo) -> ReplicaRates:
    gpus = plan.tensor_parallel_size * plan.pipeline_parallel_size * plan.data_parallel_size
    fp8 = fp8_compute(arch, gpu, plan)
    prefill = gpus * tflops(gpu, fp8) * 1e12 * COMPUTE_EFF / prefill_flops_per_token(arch, work.input_tokens)
    context = work.input_tokens + work.output_tokens // 2
    tp, pp = plan.tensor_parallel_size, plan.pipeline_parallel_size
    batch = slo_batch(arch, gpu, plan.weights_gib_per_gpu, plan.kv_bytes_per_token, slo, tp, pp, fp8,
                      context, DECODE_SHARE)
    batch = min(batch, int(plan.kv_cache_tokens // context))  # what one engine's KV cache holds
    if batch < 1:
        return ReplicaRates(prefill, 0.0, 0, plan.data_parallel_size)
    step_ms = decode_step_ms(arch, gpu, plan.weights_gib_per_gpu, plan.kv_bytes_per_token, batch, tp, pp, fp8, context)
    engines = plan.data_parallel_size  # each DP rank runs its own batch
    return ReplicaRates(prefill, engines * batch * 1000 / step_ms, batch, engines)


def served(prefill: int, decode: int, rates: ReplicaRates, work: Workload) -> float:
    """Requests/s that `prefill` prefill and `decode` decode replicas serve: the slower side's."""
    return min(prefill * rates.prefill_tokens_s / work.input_tokens, decode * rates.decode_tokens_s / work.output_tokens)


def best_split(replicas: int, rates: ReplicaRates, work: Workload) -> tuple[int, float]:
    """(prefill replicas, requests/s) of the split that serves the most; ties to more decode."""
    best = max(range(1, replicas), key=lambda x: (round(served(x, replicas - x, rates, work), 9), -x))
    return best, served(best, replicas - best, rates, work)


def propose(arch: Architecture, gpu: GpuSpec, plan: Plan, replicas: int, work: Workload, slo: Slo) -> PdSplit:
    """The x:y split of a P/D set of `replicas` replicas of this plan's layout, with its reasons."""
    unit = f"{plan.nodes} × {plan.gpus_per_node} × {plan.gpu}"
    if replicas < 2:
        return PdSplit(replicas, 0, 0, 0.0, "none", None, [
            f"a P/D set needs a prefill and a decode replica: {replicas} replica(s) of {unit} cannot be split"])
    rates = replica_rates(arch, gpu, plan, work, slo)
    if rates.decode_tokens_s <= 0:
        return PdSplit(replicas, 0, 0, 0.0, "none", rates, [
            f"no decode batch of {unit} meets the TPOT SLO ({slo.tpot_ms:g} ms) with "
            f"{work.input_tokens + work.output_tokens // 2:,}-token contexts: no split serves this workload"])
    x, per_s = best_split(replicas, rates, work)
    prefill_s, decode_s = work.input_tokens / rates.prefill_tokens_s, work.output_tokens / rates.decode_tokens_s
    ideal = prefill_s / decode_s
    side_p, side_d = x * rates.prefill_tokens_s / work.input_tokens, (replicas - x) * rates.decode_tokens_s / work.output_tokens
    bottleneck = "prefill" if side_p < side_d else "decode"
    reasons = [
        f"workload: {work.input_tokens:,}-token prompts, {work.output_tokens:,}-token answers (plan_input_tokens, "
        f"plan_output_tokens); a replica is {unit} ({_layout(plan)})",
        f"a prefill replica computes ~{rates.prefill_tokens_s:,.0f} prompt tokens/s (compute-bound): "
        f"{prefill_s * 1000:,.0f} ms of it per request",
        f"a decode replica streams ~{rates.decode_tokens_s:,.0f} tokens/s within the TPOT SLO ({slo.tpot_ms:g} ms; "
        f"{rates.engines} engine(s) × {rates.decode_batch} running requests, bandwidth-bound): "
        f"{decode_s * 1000:,.0f} ms of it per request",
        f"so a request needs {ideal:.2f} prefill replica(s) per decode replica; of {replicas} replicas "
        f"{x}:{replicas - x} serves the most, ~{per_s:,.2f} requests/s ({bottleneck} is the bottleneck, "
        f"the other side {100 * per_s / max(side_p, side_d):.0f}% busy)",
    ]
    if prefill_s > slo.ttft_s:
        reasons.append(f"a prompt alone takes {prefill_s:.2f} s to prefill, over the TTFT SLO ({slo.ttft_s:g} s): "
                       "shorter prompts or faster prefill replicas (more GPUs each)")
    return PdSplit(replicas, x, replicas - x, per_s, bottleneck, rates, reasons)


def _layout(plan: Plan) -> str:
    return (f"TP{plan.tensor_parallel_size} × PP{plan.pipeline_parallel_size} × DP{plan.data_parallel_size}"
            + (" + EP" if plan.enable_expert_parallel else ""))


def render_split(split: PdSplit, title: str) -> str:
    head = f"== {title} ==\nsplit  {split.ratio} (prefill:decode) of {split.replicas} replica(s)" if split.prefill else \
        f"== {title} ==\nsplit  none"
    return "\n".join([head, "why:", *(f"  - {r}" for r in split.reasons)]) + "\n"
