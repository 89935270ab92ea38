"""A GPU plan made for speed: FP8 (fp8.py), the batching budget for the SLO and R1's recipe
(recipe.py) on top of the layout and memory plan. Pure."""

from __future__ import annotations

from dataclasses import replace

from r1deploy.planner.core import Plan, _to_plan
from r1deploy.planner.fp8 import choose_fp8, fp8_compute
from r1deploy.planner.layout import Request, choose, evaluate
from r1deploy.planner.profiles import Layout
from r1deploy.planner.recipe import Slo, batching_budget, r1_recipe, slo_batch


def plan_for_speed(req: Request, fixed: Layout | None, fp8: bool, slo: Slo, batching: bool = True) -> Plan:
    chosen = choose_fp8(req, fixed, fp8, slo)
    req = chosen.request
    ev, context, why = choose(req, fixed)
    lay = ev.layout
    batch = slo_batch(req.model.arch, req.gpu, max(s.weights_gib for s in ev.stages), ev.worst.kv_bytes_per_token,
                      slo, lay.tp, lay.pp, fp8_compute(req))
    budget, budget_why = batching_budget(req.model.arch, req.gpu, slo, batch, lay.tp, lay.pp, fp8_compute(req))
    # The spec's own values stand (vllm_max_num_seqs, extra_args): only the unset ones are planned.
    if not batching:
        budget, budget_why = {}, []
    if req.engine.max_num_batched_tokens:
        budget.pop("max-num-batched-tokens", None)
    if req.engine.max_num_seqs:
        budget.pop("max-num-seqs", None)
    if budget:
        # vLLM sizes its activation peak and the sampler's profile from these: plan memory with them.
        req = replace(req, engine=replace(req.engine,
                                          max_num_batched_tokens=budget.get("max-num-batched-tokens",
                                                                            req.engine.max_num_batched_tokens),
                                          max_num_seqs=budget.get("max-num-seqs", req.engine.max_num_seqs)))
        ev = evaluate(req, lay, context)
    result = _to_plan(req, ev, context, why)
    recipe, recipe_why = r1_recipe(req.model.arch, req.model.entry.config if req.model.entry else None, req.gpu,
                                   lay.tp, lay.pp, lay.dp, lay.ep, lay.dp_shares_experts, req.prefer)
    result.recommended_args.update(budget)
    if chosen.online_weights:
        result.recommended_args["quantization"] = "fp8"
    result.recommended_args.update(recipe)
    result.reasons += chosen.reasons + (budget_why if budget else []) + recipe_why
    result.suggestions += chosen.suggestions
    return result
