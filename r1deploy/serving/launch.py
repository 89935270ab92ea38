"""vLLM's own multi-node launch for a serving group's members, and the engine's multi-GPU switches. Pure.

Two launch modes, both vLLM's native ``mp`` backend (no Ray, no home-made launcher), chosen
from the layout the engine args carry:

- ``multi-node``: one model replica larger than a node (TP × PP = GPUs of all members, DP 1):
  ``--nnodes``, ``--node-rank``, ``--master-addr`` (the head's fleet address), ``--master-port``;
  workers ``--headless``. R1 on 2×8×H100: TP8 × PP2.
- ``data-parallel``: DP ranks spread over the members (DP × TP × PP = GPUs of all members),
  e.g. DP16 + EP on two 8×H200 nodes (vLLM's DeepSeek recipe): ``--data-parallel-size``,
  ``--data-parallel-size-local`` (ranks per node), ``--data-parallel-address`` (the head),
  ``--data-parallel-rpc-port``; workers ``--data-parallel-start-rank`` and ``--headless``.

Flag names checked against vLLM 0.26.0's engine/arg_utils.py and openai/cli_args.py, and parsed
by vLLM 0.32's own parser in tests/test_vllm_parser.py.
"""

from __future__ import annotations

from typing import Any

from r1deploy.planner.launch import MULTI_NODE, Launch, choose_launch, layout_of
from r1deploy.serving.group import Member, ServingGroup
from r1deploy.spec import Spec


def group_engine_args(spec: Spec, args: dict[str, Any], group: ServingGroup, member: Member,
                      gpus_per_node: int) -> tuple[dict[str, Any], Launch]:
    """The engine args one member adds to its layout to join the group."""
    launch = choose_launch(args, gpus_per_node, group.size)
    head = group.head_ip
    worker = member.rank > 0
    if launch.mode == MULTI_NODE:
        extra: dict[str, Any] = {"nnodes": group.size, "node-rank": member.rank, "master-addr": head,
                                 "master-port": spec.fleet.group_master_port}
    else:
        tp, pp, dp = layout_of(args)
        local = gpus_per_node // (tp * pp)
        extra = {"data-parallel-size": dp, "data-parallel-size-local": local, "data-parallel-address": head,
                 "data-parallel-rpc-port": spec.fleet.group_dp_rpc_port}
        if worker:
            extra["data-parallel-start-rank"] = member.rank * local
    if worker:
        extra["headless"] = True  # no API server: the head serves and the gateway routes to it
    return extra, launch


# --------------------------------------------------------------------------- multi-GPU switches


def multi_gpu_args(spec: Spec, args: dict[str, Any]) -> dict[str, Any]:
    """Custom all-reduce and FlashInfer's all-reduce + RMSNorm fusion, off where the spec says so
    (by default where NVLink multicast is off: on a lent 2×H200 host the auto-selected fusion
    crashed with cudaErrorIllegalAddress in torch symmetric memory). 0.26's PassConfig key is
    ``fuse_allreduce_rms``."""
    v = spec.vllm
    if v.device != "cuda":
        return {}
    tp, pp, _ = layout_of(args)
    if tp * pp == 1 and not args.get("enable-expert-parallel"):
        return {}
    out: dict[str, Any] = {}
    if not (v.nvlink_multicast if v.custom_all_reduce is None else v.custom_all_reduce):
        out["disable-custom-all-reduce"] = True
    if not (v.nvlink_multicast if v.allreduce_fusion is None else v.allreduce_fusion):
        out["compilation-config"] = {"pass_config": {"fuse_allreduce_rms": False}}
    return out


def group_env(spec: Spec) -> dict[str, str]:
    """Per-node environment of NCCL's network traffic where the spec names it."""
    return {"NCCL_IB_HCA": spec.vllm.nccl_ib_hca} if spec.vllm.nccl_ib_hca else {}
