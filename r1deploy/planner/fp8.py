"""FP8 on GPUs that have it (Hopper, Ada, MI300): weights for BF16 models (vLLM's online
``--quantization fp8``) and the KV cache where it raises the concurrency the SLO allows. Pure.

The operator opts in with one spec key (plan_fp8); without it the plan only says what FP8 would
give. Quality is the trade: online FP8 (per-tensor dynamic scales) is not checked by vLLM, so the
plan points at the quantize stage's gate (quant_scheme=fp8_dynamic, quant_max_loss_pct) on the
real weights before serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from r1deploy.planner.layout import Evaluation, Request, choose
from r1deploy.planner.profiles import Layout
from r1deploy.planner.recipe import TYPICAL_TOKENS, Slo, slo_batch, slo_concurrency

# FP8 KV must raise the SLO concurrency by at least this much to be worth its accuracy cost.
KV_GAIN = 1.05
QUALITY = ("quality: online FP8 is unchecked by vLLM; measure it with the quantize stage's gate on the real "
           "weights (quant_scheme=fp8_dynamic, quant_max_loss_pct) before it serves users")
KV_QUALITY = ("quality: an FP8 KV cache without calibrated scales (vLLM's default, scale 1.0) costs some accuracy "
              "on long contexts; check it with the quantize stage's gate on the real weights")


@dataclass
class Fp8Choice:
    request: Request
    reasons: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)

    @property
    def online_weights(self) -> bool:
        return self.request.quantization == "fp8"


def fp8_compute(req: Request) -> bool:
    return req.gpu.fp8 and (req.quantization == "fp8" or req.model.arch.linear_quant == "fp8")


def _batch(req: Request, ev: Evaluation, slo: Slo) -> int:
    weights = max(s.weights_gib for s in ev.stages)
    return slo_batch(req.model.arch, req.gpu, weights, ev.worst.kv_bytes_per_token, slo, ev.layout.tp,
                     ev.layout.pp, fp8_compute(req))


def concurrency(req: Request, ev: Evaluation, slo: Slo) -> tuple[float, int]:
    """(requests the fleet's replicas run within the SLO, the SLO's decode batch per replica)."""
    batch = _batch(req, ev, slo)
    return slo_concurrency(ev.tokens, batch) * ev.layout.dp, batch


def choose_fp8(req: Request, fixed: Layout | None, opt_in: bool, slo: Slo) -> Fp8Choice:
    """The Request the plan is made for (FP8 weights/KV when opted in and worth it), and why."""
    if req.device == "cpu" or not req.gpu.fp8:
        return Fp8Choice(req)
    weights_ok = req.model.arch.linear_quant is None and req.quantization is None
    kv_ok = req.kv_cache_dtype == "auto"
    if not (weights_ok or kv_ok):
        return Fp8Choice(req)
    base_ev = choose(req, fixed)[0]
    w_req = replace(req, quantization="fp8") if weights_ok else req
    w_ev = choose(w_req, fixed)[0] if weights_ok else base_ev
    kv_req = replace(w_req, kv_cache_dtype="fp8")
    kv_ev = choose(kv_req, fixed)[0] if kv_ok else w_ev
    (c0, b0), (c1, b1), (c2, b2) = (concurrency(req, base_ev, slo), concurrency(w_req, w_ev, slo),
                                    concurrency(kv_req, kv_ev, slo))
    kv_pays = kv_ok and c2 > c1 * KV_GAIN
    lines = []
    if weights_ok:
        lines.append(f"FP8 weights (vLLM online --quantization fp8, per-tensor dynamic scales): "
                     f"{_weights(base_ev):.1f} → {_weights(w_ev):.1f} GiB per GPU; SLO concurrency {c0:.0f} → {c1:.0f} "
                     f"(decode batch within the TPOT SLO {b0} → {b1})")
    if kv_pays:
        kv_bound = w_ev.tokens / TYPICAL_TOKENS < b1
        why = ("the KV cache bound it" if kv_bound else
               f"each decode step reads half the KV bytes: the TPOT SLO's batch {b1} → {b2}")
        lines.append(f"FP8 KV cache: {w_ev.tokens:,} → {kv_ev.tokens:,} tokens per replica; SLO concurrency "
                     f"{c1:.0f} → {c2:.0f} ({why})")
    elif kv_ok and b1 == 0:
        lines.append(f"FP8 KV cache not chosen: one decode step of this layout exceeds the TPOT SLO "
                     f"({slo.tpot_ms:g} ms), so more KV tokens raise no concurrency within it")
    elif kv_ok:
        native = "" if weights_ok else f"{req.model.name}'s weights are FP8 already; "
        lines.append(f"{native}FP8 KV cache not chosen: the TPOT SLO bounds the batch at {b1} per replica and the "
                     f"{'BF16' if weights_ok or req.model.arch.dtype_bytes == 2 else 'native'} KV cache already "
                     f"holds {w_ev.tokens:,} tokens ({c1:.0f} requests within the SLO)")
    final = kv_req if kv_pays else w_req
    if final is req:
        return Fp8Choice(req, reasons=lines if opt_in else [])
    if not opt_in:
        what = " and ".join(x for x, on in (("FP8 weights", weights_ok), ("FP8 KV", kv_pays)) if on)
        return Fp8Choice(req, suggestions=[f"plan_fp8: true would plan {what}: " + "; ".join(lines) + f"; {QUALITY}"])
    if not weights_ok and kv_pays:
        lines[-1] = f"{req.model.name}'s weights are FP8 already; " + lines[-1]
    quality = QUALITY if weights_ok else KV_QUALITY
    return Fp8Choice(final, reasons=[*lines, quality])


def _weights(ev: Evaluation) -> float:
    return max(s.weights_gib for s in ev.stages)
