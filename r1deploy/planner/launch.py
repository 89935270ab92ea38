"""How vLLM starts a layout over several nodes: the launch mode a layout's split asks for. Pure.

- ``multi-node``: one model replica larger than a node (TP × PP = GPUs of all members, DP 1);
- ``data-parallel``: DP ranks spread over the members (DP × TP × PP = GPUs of all members).

The planner asks it whether a layout splits over the nodes at all; serving
(``r1deploy.serving.launch``) turns the chosen mode into each member's engine args.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MULTI_NODE = "multi-node"
DATA_PARALLEL = "data-parallel"


@dataclass(frozen=True)
class Launch:
    mode: str
    why: str


def layout_of(args: dict[str, Any]) -> tuple[int, int, int]:
    return (int(args.get("tensor-parallel-size") or 1), int(args.get("pipeline-parallel-size") or 1),
            int(args.get("data-parallel-size") or 1))


def choose_launch(args: dict[str, Any], gpus_per_node: int, nodes: int) -> Launch:
    """How vLLM starts this layout over ``nodes`` members of ``gpus_per_node`` devices each."""
    tp, pp, dp = layout_of(args)
    world, total = tp * pp, gpus_per_node * nodes
    shape = f"TP{tp} × PP{pp} × DP{dp}"
    if dp == 1 and world == total:
        # vLLM fills ranks TP-first: a node holds whole TP groups when TP fits in it.
        split = ("tensor parallel inside a node, pipeline stages across nodes" if tp <= gpus_per_node
                 else f"tensor parallel across nodes ({gpus_per_node} of TP{tp} per node)")
        return Launch(MULTI_NODE, f"{shape}: one replica over {nodes} nodes; vLLM's multi-node mode "
                      f"(--nnodes {nodes}, ranks 1.. headless), {split} (NCCL; Gloo on CPU)")
    if dp > 1 and world * dp == total and gpus_per_node % world == 0:
        return Launch(DATA_PARALLEL, f"{shape}: {gpus_per_node // world} DP rank(s) per node over {nodes} "
                      "nodes; vLLM's multi-node data parallel (the head serves the API and balances, "
                      "workers headless)" + ("; experts sharded over all DP ranks" if args.get(
                          "enable-expert-parallel") else ""))
    raise ValueError(f"layout {shape} does not split over {nodes} node(s) of {gpus_per_node} GPU(s): "
                     f"TP × PP × DP must be {total} with whole replicas or whole DP ranks per node")
