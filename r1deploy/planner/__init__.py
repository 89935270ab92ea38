"""Capacity planner: will a model fit, how to lay it out, what it costs — before touching a host.

The memory model follows what vLLM does at startup. It loads the weights, runs one profile
step (peak activations: a prefill of ``max_num_batched_tokens`` through one layer's MLP, or
the sampler over ``max_num_seqs`` × vocab logits, whichever is larger), counts memory held
outside torch (NCCL, cuBLAS, custom all-reduce), subtracts a CUDA-graph estimate where that
generation does (0.21–0.25's V1 model runner; 0.26's V2 model runner captures graphs only
after the KV cache is sized), and gives the rest of ``gpu_memory_utilization × memory`` to
the KV cache, in blocks of 16 tokens (64 for MLA).
Every worker does this and the engine takes the smallest pool, so the plan works out each
pipeline stage and keeps the worst one. ``bench/planner_agreement.py`` checks the model
against KV sizes vLLM printed in public logs.

Entry points: ``plan()`` (pure), ``plan_for_spec()`` (a host's Spec plus real GPU facts),
``Plan.engine_args()`` / ``Plan.engine_env()`` for rendering the vLLM config.

Also in this room: the model/GPU catalog (catalog.py), the hardware and layout rules the fleet
check shares (hardware.py, layout_rules.py), how a layout launches over nodes (launch.py) and the
agreement with vLLM's own KV-cache figures (agreement.py). `r1deploy plan` is r1deploy/commands/plan.py.
"""

from r1deploy.planner.advice import (  # noqa: F401
    _distill_suggestions,
    _node_suggestions,
    _quant_suggestions,
    _quiet,
    suggestions,
)
from r1deploy.planner.core import (  # noqa: F401
    Plan,
    _check_target,
    _cost_reasons,
    _fixed_layout,
    _hardware_reasons,
    _launch,
    _memory_reasons,
    _plan_cpu,
    _to_plan,
    _unsupported,
    payback,
    plan,
    recipe_env,
)
from r1deploy.planner.from_spec import (  # noqa: F401
    SPEC_ARG_KEYS,
    _default_context,
    _spec_gpu,
    _spec_model,
    largest_fitting,
    plan_for_spec,
    rank_models,
    spec_overrides,
)
from r1deploy.planner.layout import (  # noqa: F401
    MIN_REPLICA_REQUESTS,
    Evaluation,
    Request,
    _fits,
    _h200_class_node,
    _roomy,
    _shrink_context,
    _valid_tp,
    candidate_layouts,
    choose,
    evaluate,
)
from r1deploy.planner.memory import (  # noqa: F401
    StageMemory,
    activation_gib,
    kv_tokens,
    linear_bytes,
    non_torch_gib,
    pp_partition,
    stage_memory,
    stage_weights_bytes,
)
from r1deploy.planner.profiles import (  # noqa: F401
    ENGINES,
    KV_DTYPE_BYTES,
    V0,
    V1,
    V1_EARLY,
    V1_GRAPH_RESERVE,
    V1_NO_GRAPH_RESERVE,
    Cost,
    EngineProfile,
    Layout,
    ModelSpec,
    _big_gpu,
)
