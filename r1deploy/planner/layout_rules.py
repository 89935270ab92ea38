"""What vLLM refuses to start with: parallel sizes against the GPUs there are and the model's shape.

Shared by the planner (an impossible layout never FITS) and the fleet check (it fails before a
host is touched). Each problem names the spec field it is about.
"""

from __future__ import annotations

from r1deploy.planner.catalog import Architecture

FIELDS = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")


def gpu_count_problem(tp: int | None, pp: int | None, dp: int | None, gpus_per_node: int | None,
                      nodes: int) -> tuple[str, str] | None:
    """TP × PP × DP ranks, one GPU each, on gpus_per_node × nodes GPUs."""
    sizes = dict(zip(FIELDS, (tp, pp, dp), strict=True))
    if gpus_per_node is None or not any(sizes.values()):
        return None
    t, p, d = (v or 1 for v in sizes.values())
    total = gpus_per_node * nodes
    if t * p * d <= total:
        return None
    field = max((f for f, v in sizes.items() if v), key=lambda f: sizes[f] or 0)
    where = f"{gpus_per_node} GPU(s) per node" + (f" × {nodes} nodes" if nodes > 1 else "")
    return field, f"TP{t} × PP{p} × DP{d} needs {t * p * d} GPUs; there are {total} ({where})"


def shape_problems(arch: Architecture, tp: int | None, pp: int | None) -> list[tuple[str, str]]:
    """vLLM splits attention heads evenly over TP ranks (KV heads may be replicated) and needs at
    least one layer per pipeline stage."""
    out = []
    if tp and arch.heads % tp:
        out.append(("tensor_parallel_size", f"TP{tp} does not divide the model's {arch.heads} attention heads"))
    elif tp and not arch.is_mla and arch.kv_heads % tp and tp % arch.kv_heads:
        out.append(("tensor_parallel_size", f"TP{tp} and the model's {arch.kv_heads} KV heads: "
                    "neither divides the other"))
    if pp and pp > arch.layers:
        out.append(("pipeline_parallel_size", f"PP{pp} exceeds the model's {arch.layers} layers"))
    return out


def layout_problems(arch: Architecture | None, tp: int | None, pp: int | None, dp: int | None,
                    gpus_per_node: int | None, nodes: int) -> list[tuple[str, str]]:
    out = [p for p in [gpu_count_problem(tp, pp, dp, gpus_per_node, nodes)] if p]
    return out + (shape_problems(arch, tp, pp) if arch else [])
