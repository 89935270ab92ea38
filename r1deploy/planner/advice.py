"""When a plan does not fit: shorter context, more memory, quantization, more nodes, a smaller model."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from r1deploy.planner.catalog import (
    MODELS,
    QUANT_BYTES,
    Architecture,
)
from r1deploy.planner.core import (
    Plan,
    plan,
)
from r1deploy.planner.layout import (
    Request,
    evaluate,
)
from r1deploy.planner.memory import (
    linear_bytes,
)
from r1deploy.planner.profiles import (
    Layout,
    ModelSpec,
)

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
