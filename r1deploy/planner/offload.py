"""KV offload to host RAM: vLLM's native CPU offloading, sized from the host's memory. Pure.

What vLLM 0.26 does (vllm/config/vllm.py ``_post_init_kv_transfer_config``, vllm/v1/kv_offload/cpu/):
``--kv-offloading-size N`` (GiB, ``CacheConfig.kv_offloading_size``) with ``--kv-offloading-backend
native`` (the default) configures the ``OffloadingConnector`` with ``cpu_bytes_to_use = N × 2^30``;
its ``CPUOffloadingSpec`` splits that over the engine's workers (TP × PP: "the total buffer size summed
across all TP ranks") and each worker allocates its share as one pinned ``torch.zeros`` at start. Blocks
the GPU evicts stay in host RAM (LRU) and a request whose prefix is there loads it over PCIe instead of
recomputing it: the gain is TTFT on prefix-heavy traffic (multi-turn chat) whose working set exceeds the
GPU's KV cache. Each data-parallel rank is an engine of its own and allocates N again (vllm/v1/engine/
core.py gives every DP rank its own kv_transfer_config, engine_id suffixed _dp<rank>).

Pinned pages never swap and are not page cache: the size must leave the host's own room. The room kept:
- the OS and the node's agents (exporters, journald, sshd, the drift check): OS_GIB or OS_SHARE of RAM;
- the checkpoint in the page cache (a restart reads it from RAM, not disk: minutes for R1);
- the engine's own processes (CUDA contexts, torch, the API server, compile workers): ENGINE_GIB per GPU.
Of what is left, SHARE goes to the buffer (headroom for bursts of the above), capped at MAX_MULTIPLE ×
the GPU KV cache (pinning and zeroing it is paid at every start) and refused under MIN_MULTIPLE × (fewer
host blocks than GPU blocks hold little the GPU does not already).
The shares are judgment, not measurement: bench/results/h200/offload/ is where the measurement goes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

OS_GIB = 16.0
OS_SHARE = 0.05
ENGINE_GIB = 8.0
SHARE = 0.8
MAX_MULTIPLE = 4.0
MIN_MULTIPLE = 1.0
FLAG = "kv-offloading-size"
BACKEND_FLAG = "kv-offloading-backend"
# Engine args that already name a KV connector: vLLM's kv_offloading_size would replace it.
CONNECTOR_ARGS = ("kv-transfer-config", "kv_transfer_config")


@dataclass(frozen=True)
class OffloadInput:
    """What the sizing needs from the plan and the host."""

    host_memory_gib: float | None  # the host's RAM (MemTotal fact, else plan_host_memory_gib); None: unknown
    checkpoint_gib: float  # the weights on disk, kept in the page cache
    gpus_per_node: int  # GPUs this node's engines use
    engines_per_node: float  # DP ranks per node (each allocates the whole buffer); < 1 when one spans nodes
    gpu_kv_gib_per_engine: float  # the GPU KV cache of one engine (all its workers)
    requested_gib: float | str | None = None  # vllm_kv_offload_gib: "auto" = plan it, None/0 = off, > 0 = this size
    connector: bool = False  # the spec names its own kv-transfer-config


@dataclass
class OffloadChoice:
    gib: int | None  # --kv-offloading-size, or None: off
    reasons: list[str] = field(default_factory=list)
    fits: bool = True  # False: the spec's own size does not fit the host's RAM

    def engine_args(self) -> dict[str, object]:
        return {FLAG: self.gib, BACKEND_FLAG: "native"} if self.gib else {}


def room_gib(inp: OffloadInput) -> tuple[float, str]:
    """Host RAM left for offload buffers on this node, and how it was worked out."""
    ram = float(inp.host_memory_gib or 0)
    os_gib = max(OS_GIB, OS_SHARE * ram)
    engine = ENGINE_GIB * inp.gpus_per_node
    room = max(0.0, ram - os_gib - inp.checkpoint_gib - engine)
    return room, (f"host {ram:,.0f} GiB − OS {os_gib:,.0f} − checkpoint in page cache {inp.checkpoint_gib:,.0f} "
                  f"− engine {engine:,.0f} ({ENGINE_GIB:g} per GPU) = {room:,.0f} GiB")


def choose_offload(inp: OffloadInput) -> OffloadChoice:
    """--kv-offloading-size for one engine (one DP rank), with its reason line."""
    if inp.requested_gib == 0:
        return OffloadChoice(None, ["KV offload off (vllm_kv_offload_gib: 0)"])
    if inp.requested_gib is None:  # opt-in: say what "auto" would do, render nothing
        auto = choose_offload(replace(inp, requested_gib="auto"))
        return OffloadChoice(None, [f"KV offload off (vllm_kv_offload_gib unset; \"auto\" to opt in): "
                                    f"with \"auto\": {auto.reasons[0]}"])
    if inp.connector:
        if inp.requested_gib != "auto":
            return OffloadChoice(None, ["does not run: vllm_kv_offload_gib and a kv-transfer-config in "
                                        "vllm_extra_args both set vLLM's KV connector"], fits=False)
        return OffloadChoice(None, ["KV offload not planned: vllm_extra_args names its own kv-transfer-config "
                                    "(vLLM's --kv-offloading-size would replace that connector)"])
    if inp.requested_gib != "auto":
        return _requested(inp, float(inp.requested_gib))
    if not inp.host_memory_gib:
        return OffloadChoice(None, ["KV offload not planned: the host's RAM is unknown (no facts yet; "
                                    "plan_host_memory_gib or vllm_kv_offload_gib sets it)"])
    room, how = room_gib(inp)
    per_engine = SHARE * room / max(inp.engines_per_node, 1e-9)
    cap = MAX_MULTIPLE * inp.gpu_kv_gib_per_engine
    least = MIN_MULTIPLE * inp.gpu_kv_gib_per_engine
    if per_engine < least or per_engine < 1:
        return OffloadChoice(None, [f"KV offload not planned: {how}; {SHARE:.0%} of it per engine "
                                    f"({per_engine:,.0f} GiB) is under {MIN_MULTIPLE:g} × the GPU KV cache "
                                    f"({inp.gpu_kv_gib_per_engine:,.0f} GiB): it would hold little the GPU does not"])
    gib = int(math.floor(min(per_engine, cap)))
    bound = f"capped at {MAX_MULTIPLE:g} × the GPU KV cache (pinned and zeroed at every start)" \
        if per_engine > cap else f"{SHARE:.0%} of the room" + (
            f" over {_engines(inp)} engines on the node" if inp.engines_per_node > 1 else "")
    return OffloadChoice(gib, [f"KV offload to host RAM: --kv-offloading-size {gib} GiB per engine (vLLM's native "
                               f"OffloadingConnector, pinned; {gib / max(inp.gpu_kv_gib_per_engine, 1e-9):.1f} × "
                               f"its GPU KV cache of {inp.gpu_kv_gib_per_engine:,.0f} GiB): {how}, {bound}; "
                               "prefixes the GPU evicts (multi-turn chat) come back over PCIe instead of "
                               "being recomputed"])


def _requested(inp: OffloadInput, gib: float) -> OffloadChoice:
    """The spec's own size: checked against the host's RAM when that is known."""
    line = f"KV offload to host RAM: --kv-offloading-size {gib:g} GiB per engine (vllm_kv_offload_gib)"
    if not inp.host_memory_gib:
        return OffloadChoice(_whole(gib), [line + "; not checked against the host's RAM (unknown: no facts "
                                          "yet, no plan_host_memory_gib)"])
    room, how = room_gib(inp)
    needed = gib * inp.engines_per_node
    if needed > room:
        return OffloadChoice(None, [f"does not run: vllm_kv_offload_gib {gib:g} pins {needed:,.0f} GiB of host "
                                    f"RAM on this node, more than its room ({how})"], fits=False)
    return OffloadChoice(_whole(gib), [f"{line}; {needed:,.0f} GiB of the host's room ({how})"])


def _whole(gib: float) -> int | float:
    return int(gib) if float(gib).is_integer() else gib


def _engines(inp: OffloadInput) -> str:
    return f"{inp.engines_per_node:g}"


def checkpoint_gib(arch) -> float:
    """The checkpoint's weights as they lie on disk (its own dtype, before any online quantization)."""
    from r1deploy.planner.catalog import GIB
    from r1deploy.planner.memory import stage_weights_bytes
    from r1deploy.planner.profiles import Layout

    return stage_weights_bytes(arch, Layout(1, 1, 1, False), 0, arch.layers, None) / GIB


def apply_offload(result, arch, requested_gib: float | str | None, host_memory_gib: float | None,
                  overrides: dict | None) -> None:
    """Size the offload buffer of a GPU Plan in place: its engine args, reason line and fit."""
    world = result.tensor_parallel_size * result.pipeline_parallel_size
    inp = OffloadInput(
        host_memory_gib=host_memory_gib, checkpoint_gib=checkpoint_gib(arch),
        gpus_per_node=max(1, world * result.data_parallel_size // result.nodes),
        engines_per_node=result.data_parallel_size / result.nodes,
        gpu_kv_gib_per_engine=result.kv_cache_gib_per_gpu * world, requested_gib=requested_gib,
        connector=any(k in (overrides or {}) for k in CONNECTOR_ARGS))
    choice = choose_offload(inp)
    result.kv_offload_gib = choice.gib
    result.recommended_args.update(choice.engine_args())
    result.reasons += choice.reasons
    if not choice.fits:
        result.fits = False
