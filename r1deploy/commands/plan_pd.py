"""`r1deploy plan`'s P/D split (issue 25): for flags (--pd-nodes) or for each P/D set of an inventory,
the prefill:decode split the workload asks for (r1deploy/planner/pd_split.py), and how the
inventory's own split compares."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from r1deploy.planner import ModelSpec, Plan
from r1deploy.planner.pd_split import PdSplit, Workload, propose, served
from r1deploy.planner.recipe import Slo


def _replicas(nodes: int, plan: Plan) -> int:
    if nodes % plan.nodes:
        raise ValueError(f"--pd-nodes {nodes}: a replica of this layout spans {plan.nodes} nodes; give a multiple")
    return nodes // plan.nodes


def flag_split(args: argparse.Namespace, plan: Plan) -> dict[str, PdSplit]:
    """`--pd-nodes N`: the split of N nodes of the flags' hardware, under the spec's default SLO."""
    if args.pd_nodes is None:
        return {}
    if not plan.fits or plan.device == "cpu":
        raise ValueError("--pd-nodes: the model must fit one replica of GPUs first (see the plan above)")
    from r1deploy.commands.plan import _gpu

    model = ModelSpec.from_config(args.model or "model", json.loads(Path(args.config).read_text())) if args.config \
        else ModelSpec.from_catalog(args.model)
    work = Workload(args.input_tokens, args.output_tokens)
    split = propose(model.arch, _gpu(args), plan, _replicas(args.pd_nodes, plan), work, Slo())
    return {f"P/D split of {args.pd_nodes} × {plan.gpus_per_node} × {plan.gpu}": split}


def inventory_splits(path: str, plans: dict[str, Plan], config: str | None) -> dict[str, PdSplit]:
    """Each P/D set's proposed split, from its first prefill replica's spec and plan (validation made
    both sides one model and engine), with the inventory's own split beside it."""
    from r1deploy.fleet.inventory import load_specs
    from r1deploy.fleet.pd_sets import pd_sets
    from r1deploy.planner.from_spec import _spec_gpu, _spec_model

    specs = load_specs(path)
    model_config = json.loads(Path(config).read_text()) if config else None
    out = {}
    for name, pd in pd_sets(specs).items():
        spec, plan = specs[pd.reference], plans[pd.reference]
        arch, gpu = _spec_model(spec, model_config).arch, _spec_gpu(spec, None, None)
        work = Workload(spec.plan.input_tokens, spec.plan.output_tokens)
        slo = Slo(spec.monitor.slo_ttft_p99_s, spec.monitor.slo_tpot_p99_ms)
        split = propose(arch, gpu, plan, len(pd.prefill) + len(pd.decode), work, slo)
        has = f"{len(pd.prefill)}:{len(pd.decode)}"
        if split.rates and split.prefill and has != split.ratio:
            now = served(len(pd.prefill), len(pd.decode), split.rates, work)
            split.reasons.append(f"the inventory runs {has}: ~{now:,.2f} requests/s; {split.ratio} would serve "
                                 f"~{split.requests_per_s:,.2f} (move a node with its vllm_pd_role)")
        out[f"P/D set {name} ({has} prefill:decode in the inventory)"] = split
    return out
