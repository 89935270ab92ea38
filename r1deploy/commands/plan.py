"""`r1deploy plan`: the capacity plan from an inventory or from flags, as a table or JSON.

Exit status 0 when every plan fits, 1 when one does not (so scripts can gate on it), 2 on
bad input (an inventory that is missing, has no hosts or does not validate included).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from r1deploy.planner import ModelSpec, Plan, plan, plan_for_spec
from r1deploy.planner.catalog import GPUS, MODELS, custom_gpu, find_gpu
from r1deploy.spec import PlanSection

PLAN_DEFAULTS = PlanSection.model_fields  # the workload's defaults are the spec's (plan_input_tokens, ...)

COST_FLAGS = ("capex_usd", "power_kw", "power_usd_per_kwh", "cloud_usd_per_mtok", "tokens_per_day")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="capacity plan: does the model fit, which layout, KV cache, cost",
                       description=__doc__)
    p.add_argument("--inventory", help="pyinfra inventory; plans every node host from its spec")
    p.add_argument("--model", help=f"catalog model or repo id ({', '.join(m.name for m in MODELS)})")
    p.add_argument("--config", help="a config.json to plan a model the catalog does not know")
    p.add_argument("--gpu", help=f"GPU name, fuzzy ({', '.join(g.name for g in GPUS)})")
    p.add_argument("--gpu-memory-mib", type=int, help="real per-GPU memory (nvidia-smi), overrides the catalog")
    p.add_argument("--gpus", type=int, help="GPUs per node (1 when planning a --model; with --inventory: the real count, which beats plan_gpu_count, as --gpu and --gpu-memory-mib beat plan_gpu)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "fp8", "fp8_e4m3", "fp8_e5m2"])
    p.add_argument("--quantization", choices=["none", "fp8_dynamic", "w8a8_int8", "w4a16"])
    p.add_argument("--prefer", choices=["throughput", "latency"], default="throughput")
    p.add_argument("--target-concurrency", type=int, help="full-length requests the fleet must hold at once")
    p.add_argument("--tp", type=int, help="fix tensor-parallel size")
    p.add_argument("--pp", type=int, help="fix pipeline-parallel size")
    p.add_argument("--dp", type=int, help="fix data-parallel size")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--host-memory-gib", type=float, help="the host's RAM: sizes the KV offload to it")
    p.add_argument("--kv-offload-gib", type=_offload_gib, help="KV offload per engine: GiB, 0 (off), or auto "
                   "(sized from --host-memory-gib); unset: off, with what auto would pin")
    p.add_argument("--cpu-kvcache-gib", type=float, default=4.0, help="VLLM_CPU_KVCACHE_SPACE for --device cpu")
    for flag in COST_FLAGS:
        p.add_argument("--" + flag.replace("_", "-"), type=float)
    p.add_argument("--pd-nodes", type=int, metavar="N", help="also split N nodes into a P/D set's prefill:decode "
                   "replicas for the workload below (issue 25)")
    p.add_argument("--input-tokens", type=int, default=PLAN_DEFAULTS["input_tokens"].default,
                   help="mean prompt length of the workload (plan_input_tokens)")
    p.add_argument("--output-tokens", type=int, default=PLAN_DEFAULTS["output_tokens"].default,
                   help="mean answer length, reasoning included (plan_output_tokens)")
    p.add_argument("--json", action="store_true", help="machine-readable output (stable keys)")
    p.add_argument("--bench", metavar="DIR", help="an `r1deploy bench` release directory: tokens/day and payback "
                   "from measured throughput (default: reports/bench/<fleet_release> when it exists)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from r1deploy.commands.plan_pd import flag_split, inventory_splits
    from r1deploy.fleet.inventory import InventoryFileError
    from r1deploy.planner.pd_split import render_split
    from r1deploy.spec import SpecError

    try:
        plans = _inventory_plans(args.inventory, args.config, args.bench, facts=_gpu_facts(args)) if args.inventory \
            else {"plan": _flag_plan(args)}
        splits = inventory_splits(args.inventory, plans, args.config) if args.inventory else flag_split(args, plans["plan"])
    except (KeyError, ValueError, OSError, InventoryFileError, SpecError) as exc:
        print(f"r1deploy plan: {exc}", file=sys.stderr)
        return 2
    if args.json:
        body: Any = plans["plan"].to_dict() if not args.inventory else \
            {"hosts": {name: p.to_dict() for name, p in plans.items()}}
        if splits:
            body["pd_splits"] = {title: split.to_dict() for title, split in splits.items()}
        print(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        for name, p in plans.items():
            print(render_table(p, title=None if name == "plan" else name))
        for title, split in splits.items():
            print(render_split(split, title))
    return 0 if all(p.fits for p in plans.values()) else 1


def _flag_plan(args: argparse.Namespace) -> Plan:
    if args.config:
        model = ModelSpec.from_config(args.model or Path(args.config).parent.name,
                                      json.loads(Path(args.config).read_text()))
    elif args.model:
        model = ModelSpec.from_catalog(args.model)
    else:
        raise ValueError("give --inventory, or --model (or --config) with --gpu")
    gpu = _gpu(args)
    costs = {k: getattr(args, k) for k in COST_FLAGS}
    return plan(model, gpu, 1 if args.gpus is None else args.gpus, args.nodes, max_model_len=args.max_model_len,
                gpu_memory_utilization=args.gpu_memory_utilization, kv_cache_dtype=args.kv_cache_dtype,
                quantization=args.quantization, tensor_parallel_size=args.tp, pipeline_parallel_size=args.pp,
                data_parallel_size=args.dp, prefer=args.prefer, device=args.device,
                cpu_kvcache_space_gib=args.cpu_kvcache_gib, target_concurrency=args.target_concurrency,
                kv_offload_gib=args.kv_offload_gib, host_memory_gib=args.host_memory_gib,
                costs=costs if any(v is not None for v in costs.values()) else None)


def _gpu(args: argparse.Namespace):
    if args.device == "cpu":
        return custom_gpu(1024, name="cpu")
    known = find_gpu(args.gpu) if args.gpu else None
    if args.gpu_memory_mib is not None:
        return custom_gpu(args.gpu_memory_mib, like=known, name=known.name if known else args.gpu)
    if known is None:
        raise KeyError(f"unknown GPU {args.gpu!r}; known: {', '.join(g.name for g in GPUS)}")
    return known


def _offload_gib(value: str) -> float | str:
    """--kv-offload-gib: "auto" (sized from the host's RAM) or GiB per engine."""
    return value if value == "auto" else float(value)


def _gpu_facts(args: argparse.Namespace) -> dict:
    """--gpu/--gpus/--gpu-memory-mib with --inventory: what nvidia-smi says on the host, as the serve
    stage hands it to the planner (a plan of the inventory alone would silently ignore them)."""
    if args.gpus is not None and args.gpus < 1:
        raise ValueError(f"gpus_per_node {args.gpus}: must be at least 1")
    return {"gpu_name": args.gpu, "gpu_count": args.gpus, "gpu_memory_mib": args.gpu_memory_mib,
            "host_memory_gib": args.host_memory_gib}


def _inventory_plans(path: str, config: str | None, bench: str | None = None,
                     facts: dict | None = None) -> dict[str, Plan]:
    """Every node host's plan; --config supplies the config.json of a model the catalog lacks;
    `facts` (_gpu_facts) stand for the hosts' own GPU and RAM facts."""
    from r1deploy.fleet.inventory import load_specs

    model_config = json.loads(Path(config).read_text()) if config else None
    specs = load_specs(path)
    nodes = {name: spec for name, spec in specs.items() if spec.fleet.role == "node"}
    measured, why, served = _measured_share(nodes, bench)
    try:
        plans = {name: plan_for_spec(measured(spec) if name in served else spec, model_config=model_config,
                                   **(facts or {}))
                 for name, spec in nodes.items()}
    except KeyError as exc:
        raise KeyError(f"{exc.args[0]}; pass --config path/to/config.json for it") from None
    for name in served:
        plans[name].reasons.append(why)
    for name, spec in nodes.items():  # what the serve stage renders, not the plan's wish list
        _as_rendered(spec, plans[name])
    return plans


def _as_rendered(spec, p: Plan) -> None:
    """The engine args as the serve stage renders them (DeepEP's all-to-all and DBO only where DeepEP
    is installed and DP + EP spans nodes), and the plan's note where it falls back."""
    from r1deploy.serving import ep_kernels as ep

    p.rendered_engine_args = ep.plan_engine_args(spec, p)
    note = ep.fallback_note(spec, p)
    if note:
        p.reasons.append(note)


def _measured_share(nodes: dict, bench: str | None):
    """With an `r1deploy bench` summary (--bench DIR, else reports/bench/<fleet_release>/): each node's
    plan_tokens_per_day is its share of what the fleet measurably served within the SLO."""
    from r1deploy.observe.bench import SUMMARY_FILE, measured_tokens_per_day

    first = next(iter(nodes.values()), None)
    directory = Path(bench or f"reports/bench/{first.fleet.release if first else '-'}")
    if not (directory / SUMMARY_FILE).exists():
        if bench:
            raise ValueError(f"--bench {bench}: no {SUMMARY_FILE} there (run `r1deploy bench` first)")
        return None, "", set()
    summary = json.loads((directory / SUMMARY_FILE).read_text())
    # The sweep went through a gateway: it measured the nodes serving its model (all, if it does not say).
    model = summary.get("meta", {}).get("model")
    from r1deploy.fleet.groups import is_group_worker

    # One share per replica the gateway routes to: a serving group's workers are its head's replica.
    served = {n for n, s in nodes.items() if s.model.name == model and not is_group_worker(s, n)} or set(nodes)
    slo_s = nodes[min(served)].monitor.slo_ttft_p99_s
    per_day = measured_tokens_per_day(summary, slo_s * 1000)
    if per_day is None:
        raise ValueError(f"{directory}: no sweep point met the TTFT p99 SLO ({slo_s} s)")
    share = per_day / len(served)

    def with_share(spec):
        return spec.model_copy(update={"plan": spec.plan.model_copy(update={"tokens_per_day": share})})

    return with_share, (f"tokens/day measured by r1deploy bench {summary['release']}: {per_day:,.0f} for the "
                        f"{len(served)} node(s) behind the gateway within the SLO, {share:,.0f} each "
                        f"({directory})"), served


def render_table(p: Plan, title: str | None = None) -> str:
    verdict = "FITS" if p.fits else "DOES NOT FIT"
    layout = f"TP{p.tensor_parallel_size} × PP{p.pipeline_parallel_size} × DP{p.data_parallel_size}" + (
        " + EP" if p.enable_expert_parallel else "")
    cpu = p.device == "cpu"
    hardware = "CPU" if cpu else f"{p.nodes} × {p.gpus_per_node} × {p.gpu}"
    rows = [
        ("model", p.model), ("hardware", hardware), ("verdict", verdict), ("layout", layout),
        ("max model len", f"{p.max_model_len:,}"),
        ("weights" if cpu else "weights / GPU", _size(p.weights_gib_per_gpu)),
    ]
    if not cpu:
        rows.append(("reserves / GPU", f"non-torch {p.non_torch_gib:.2f} + activations {p.activation_gib:.2f} "
                                       f"+ CUDA graphs {p.cuda_graph_gib:.2f} GiB"))
    rows += [
        ("KV cache" if cpu else "KV cache / GPU", f"{_size(p.kv_cache_gib_per_gpu)} ({p.kv_bytes_per_token:,} B/token)"),
        ("KV cache tokens", f"{p.kv_cache_tokens:,} per replica"),
        ("max concurrency", f"{p.max_concurrency:g} × {p.max_model_len:,}-token requests"),
    ]
    if p.kv_offload_gib:
        rows.append(("KV offload", f"{p.kv_offload_gib:g} GiB host RAM per engine (--kv-offloading-size)"))
    if p.cost and p.cost.yearly_saving_usd is not None:
        payback = "never" if p.cost.months_to_payback is None else f"{p.cost.months_to_payback} months"
        rows.append(("yearly saving", f"${p.cost.yearly_saving_usd:,.0f} (payback {payback})"))
    width = max(len(k) for k, _ in rows)
    lines = [f"== {title} ==" if title else "== capacity plan =="]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    lines += ["why:"] + [f"  - {r}" for r in p.reasons]
    if p.suggestions:
        lines += ["instead:"] + [f"  - {s}" for s in p.suggestions]
    args = p.rendered_engine_args if p.rendered_engine_args is not None else p.engine_args()
    lines.append("engine args: " + " ".join(_flag(k, v) for k, v in args.items()))
    return "\n".join(lines) + "\n"


def _size(gib: float) -> str:
    return f"{gib:.2f} GiB" if gib >= 0.1 else f"{gib * 1024:.1f} MiB"


def _flag(key: str, value: Any) -> str:
    return f"--{key}" if value is True else f"--{key} {value}"
