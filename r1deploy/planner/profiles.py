"""Planner inputs: how each vLLM generation sizes its KV cache, the model, the layout, the cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from r1deploy.planner.catalog import (
    MODELS,
    Architecture,
    GpuSpec,
    ModelEntry,
    find_model,
)

KV_DTYPE_BYTES = {"auto": None, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


# --------------------------------------------------------------------------- engine profile


@dataclass(frozen=True)
class EngineProfile:
    """How one vLLM generation sizes its KV cache. ``None`` means "vLLM's default for this GPU".

    The default, ``V1``, is the generation the project installs (vLLM 0.26.0, V1 engine with
    the V2 model runner), calibrated on a real H200 (tests/data/h200_vllm_observations.json).
    """

    name: str = "v1"
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    # CUDA-graph memory subtracted before sizing the KV cache. 0.26's V2 model runner sizes
    # the KV cache first and captures graphs afterwards (no "Estimated CUDA graph memory"
    # line; the 0.89 GiB of graphs for a 7B come out of the headroom above the utilization).
    cuda_graph_gib: float = 0.0
    # Peak bytes per logit of the dummy sampler run over max_num_seqs × vocab logits. 0.26's
    # V2 runner skips top-k, top-p and logprobs in the profile: the bf16 logits of the LM head
    # plus the float32 copy the sampler works on, ~6 B (1024 × 152,064 logits = 0.87 GiB, below
    # the forward peak of every H200 run). The V1 runner of 0.11–0.25 also computed logprobs:
    # ~38 B (float32 logits, probabilities, log-probabilities, sorted values and int64
    # indices): 1024 seqs took 4.76 GiB with a 128,256 vocab, 5.56 GiB with 151,936 and 7.38
    # GiB with 201,088 on H100. V0 sorted for top-p/top-k as well (256 × 151,936 logits took
    # 1.39 GiB); early V1 with FlashInfer sampling needed ~10 B.
    sampler_bytes_per_logit: float = 6.0
    # Memory outside torch's allocator that grows during the profile on one GPU (cuBLAS and
    # attention workspaces): 0.22 GiB with 0.26 on H200 (all nine runs), 0.13 on H100 before.
    non_torch_gib: float = 0.22
    block_size: int = 16
    mla_block_size: int = 64  # FlashMLA pages
    # V1 prints int(max_concurrency × max_model_len); V0 printed num_blocks × block_size.
    tokens_from_concurrency: bool = True

    def batched_tokens(self, gpu: GpuSpec, max_model_len: int) -> int:
        if self.max_num_batched_tokens:
            return self.max_num_batched_tokens
        if self.name == "v0":  # chunked prefill only above 32K: one prefill of the whole context
            return max(max_model_len, 2048) if max_model_len <= 32768 else 2048
        return 8192 if _big_gpu(gpu) else 2048

    def num_seqs(self, gpu: GpuSpec) -> int:
        if self.max_num_seqs:
            return self.max_num_seqs
        return 1024 if self.name != "v0" and _big_gpu(gpu) else 256


def _big_gpu(gpu: GpuSpec) -> bool:
    # vLLM's serve defaults: 8192 batched tokens / 1024 seqs on >= 70 GiB GPUs other than A100.
    return gpu.usable_gib >= 70 and "A100" not in gpu.name


# 0.26 (the version the project installs): V1 engine, V2 model runner.
V1 = EngineProfile()
# 0.21–0.25: V1 model runner; subtracts an estimate of CUDA-graph memory before sizing the KV
# cache (the estimates vLLM logs for 8B–120B models on H100 range -0.45..1.03 GiB,
# llm-d-benchmark) and profiles the sampler with logprobs.
V1_GRAPH_RESERVE = EngineProfile(name="v1-0.21", cuda_graph_gib=0.25, sampler_bytes_per_logit=38.0,
                                 non_torch_gib=0.15)
# 0.11–0.20: CUDA-graph memory measured only after the KV cache is allocated.
V1_NO_GRAPH_RESERVE = EngineProfile(name="v1-0.11", sampler_bytes_per_logit=38.0, non_torch_gib=0.15)
# 0.8–0.10: V1 engine, sampler profiled without logprobs (FlashInfer top-p/top-k).
V1_EARLY = EngineProfile(name="v1-early", sampler_bytes_per_logit=10.0, non_torch_gib=0.15)
V0 = EngineProfile(name="v0", sampler_bytes_per_logit=38.0, non_torch_gib=0.15, mla_block_size=16,
                   tokens_from_concurrency=False)
ENGINES = {e.name: e for e in (V1, V1_GRAPH_RESERVE, V1_NO_GRAPH_RESERVE, V1_EARLY, V0)}


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: Architecture
    entry: ModelEntry | None = None

    @classmethod
    def from_catalog(cls, name: str) -> ModelSpec:
        entry = find_model(name)
        if entry is None:
            raise KeyError(f"unknown model {name!r}; known: {', '.join(m.name for m in MODELS)}")
        return cls(entry.name, Architecture.from_config(entry.config), entry)

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> ModelSpec:
        return cls(name, Architecture.from_config(config), find_model(name))

    @property
    def params_b(self) -> float:
        return self.arch.total_params() / 1e9


@dataclass(frozen=True)
class Layout:
    tp: int
    pp: int
    dp: int
    ep: bool
    # DP ranks inside one engine that share the experts (DP+EP); otherwise replicas are
    # independent and each holds its own copy of every expert.
    dp_shares_experts: bool = False

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp


@dataclass
class Cost:
    capex_usd: float | None
    power_kw: float | None
    power_usd_per_kwh: float | None
    cloud_usd_per_mtok: float | None
    tokens_per_day: float | None
    yearly_power_usd: float | None = None
    yearly_cloud_usd: float | None = None
    yearly_saving_usd: float | None = None
    months_to_payback: float | None = None
