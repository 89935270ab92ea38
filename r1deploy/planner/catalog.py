"""Catalogs the capacity planner reasons about: R1-family models and GPUs.

A model's architecture comes from its real ``config.json`` (``data/models/``); the catalog
adds only what a config lacks: weight bytes on disk, the vLLM recipe flags and sampling
defaults. GPU entries carry what a plan needs (memory as nvidia-smi and as torch see it,
FP8 support, interconnect, memory bandwidth) and are found by fuzzy name, so the name
nvidia-smi prints on a real host maps to an entry.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

GIB = 1024**3

# --------------------------------------------------------------------------- models

R1_RECIPE_ARGS = {"trust-remote-code": True, "enable-expert-parallel": True, "reasoning-parser": "deepseek_r1"}
DISTILL_ARGS = {"reasoning-parser": "deepseek_r1"}
# R1 model card: temperature 0.6 (0.5–0.7), top-p 0.95; replies start with "<think>\n".
R1_SAMPLING = {"temperature": 0.6, "top_p": 0.95}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    repo_id: str
    config_file: str
    weight_bytes: int  # safetensors on disk, from the repo's file listing
    default_max_model_len: int
    recommended_args: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, float] = field(default_factory=lambda: dict(R1_SAMPLING))
    aliases: tuple[str, ...] = ()
    notes: str = ""

    @property
    def config(self) -> dict[str, Any]:
        return load_model_config(self.config_file)


MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("DeepSeek-R1", "deepseek-ai/DeepSeek-R1", "DeepSeek-R1.json", 688_600_000_000, 65536,
               R1_RECIPE_ARGS, aliases=("r1", "deepseek-r1-671b"),
               notes="671B MoE (+14B MTP, not loaded without speculative decoding), FP8 block weights, "
                     "163 shards; vLLM recipe: >=805 GB VRAM"),
    ModelEntry("DeepSeek-R1-0528", "deepseek-ai/DeepSeek-R1-0528", "DeepSeek-R1-0528.json", 688_600_000_000,
               65536, R1_RECIPE_ARGS, aliases=("r1-0528",),
               notes="same architecture as R1; accepts a system prompt"),
    ModelEntry("DeepSeek-R1-Distill-Llama-70B", "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
               "DeepSeek-R1-Distill-Llama-70B.json", 141_100_000_000, 32768, DISTILL_ARGS,
               aliases=("llama-70b", "distill-llama-70b")),
    ModelEntry("DeepSeek-R1-Distill-Qwen-32B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
               "DeepSeek-R1-Distill-Qwen-32B.json", 65_500_000_000, 32768, DISTILL_ARGS,
               aliases=("qwen-32b", "distill-qwen-32b")),
    ModelEntry("DeepSeek-R1-Distill-Qwen-14B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
               "DeepSeek-R1-Distill-Qwen-14B.json", 29_540_000_000, 32768, DISTILL_ARGS,
               aliases=("qwen-14b", "distill-qwen-14b")),
    ModelEntry("DeepSeek-R1-Distill-Llama-8B", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
               "DeepSeek-R1-Distill-Llama-8B.json", 16_060_000_000, 32768, DISTILL_ARGS,
               aliases=("llama-8b", "distill-llama-8b")),
    ModelEntry("DeepSeek-R1-Distill-Qwen-7B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
               "DeepSeek-R1-Distill-Qwen-7B.json", 15_230_000_000, 32768, DISTILL_ARGS,
               aliases=("qwen-7b", "distill-qwen-7b")),
    ModelEntry("DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
               "DeepSeek-R1-Distill-Qwen-1.5B.json", 3_554_000_000, 32768, DISTILL_ARGS,
               aliases=("qwen-1.5b", "distill-qwen-1.5b")),
)


@cache
def _model_config_text(file_name: str) -> str:
    return resources.files("r1deploy").joinpath("data", "models", file_name).read_text()


def load_model_config(file_name: str) -> dict[str, Any]:
    return json.loads(_model_config_text(file_name))


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9.]", "", text.lower())


def find_model(name: str) -> ModelEntry | None:
    """By repo id, catalog name or alias, case- and punctuation-insensitive."""
    wanted = _squash(name.split("/")[-1] if "/" in name else name)
    for entry in MODELS:
        keys = {entry.name, entry.repo_id.split("/")[-1], *entry.aliases}
        if name == entry.repo_id or wanted in {_squash(k) for k in keys}:
            return entry
    # "r1-distill-qwen-7b": a tail of the full name is enough when it names one model.
    tails = [e for e in MODELS if len(wanted) >= 4 and _squash(e.name).endswith(wanted)]
    return tails[0] if len(tails) == 1 else None


# --------------------------------------------------------------------------- architecture

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "half": 2, "float": 4}
# Linear-weight bytes per parameter by quantization, scales included (block 128x128 FP8 scales
# add 4 B per 16384 weights; 4-bit group-128 adds a 2 B scale per 128 weights).
QUANT_BYTES = {"fp8": 1.0003, "fp8_dynamic": 1.0, "w8a8_int8": 1.0, "int8": 1.0,
               "w4a16": 0.5 + 2 / 128, "awq": 0.5 + 2 / 128, "gptq": 0.5 + 2 / 128}


@dataclass(frozen=True)
class Architecture:
    """The shapes memory depends on, read from a HF config.json."""

    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int
    tied_embeddings: bool
    attention_bias: bool
    max_position: int
    linear_quant: str | None  # quant_method of the checkpoint's linear layers, None for 16-bit
    kv_lora_rank: int = 0  # > 0 means MLA (DeepSeek V2/V3/R1)
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    q_lora_rank: int = 0
    routed_experts: int = 0
    shared_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    dense_layers: int = 0  # leading layers with a dense MLP in a MoE model

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Architecture:
        cfg = cfg.get("text_config", cfg)
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        quant = (cfg.get("quantization_config") or {})
        routed = int(cfg.get("n_routed_experts") or cfg.get("num_local_experts") or cfg.get("num_experts") or 0)
        return cls(
            layers=int(cfg["num_hidden_layers"]),
            hidden=hidden,
            intermediate=int(cfg.get("intermediate_size") or 4 * hidden),
            vocab=int(cfg["vocab_size"]),
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            # vLLM serves float32 checkpoints in 16-bit, so weights are never wider than 2 bytes.
            dtype_bytes=min(2, DTYPE_BYTES.get(str(cfg.get("torch_dtype") or cfg.get("dtype")), 2)),
            tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=cfg.get("model_type") == "qwen2" or bool(cfg.get("attention_bias", False)),
            max_position=int(cfg.get("max_position_embeddings") or 4096),
            linear_quant=_linear_quant(quant),
            kv_lora_rank=int(cfg.get("kv_lora_rank") or 0),
            qk_rope_head_dim=int(cfg.get("qk_rope_head_dim") or 0),
            qk_nope_head_dim=int(cfg.get("qk_nope_head_dim") or 0),
            v_head_dim=int(cfg.get("v_head_dim") or 0),
            q_lora_rank=int(cfg.get("q_lora_rank") or 0),
            routed_experts=routed,
            shared_experts=int(cfg.get("n_shared_experts") or 0),
            experts_per_token=int(cfg.get("num_experts_per_tok") or 0),
            moe_intermediate=int(cfg.get("moe_intermediate_size") or 0),
            dense_layers=int(cfg.get("first_k_dense_replace") or 0) if routed else 0,
        )

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def is_moe(self) -> bool:
        return self.routed_experts > 0

    # -- parameter counts, split by how vLLM shards them --------------------------------

    def embedding_params(self) -> int:
        """Input embedding plus LM head (vocab-parallel: split by TP)."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def attention_params(self) -> tuple[int, int]:
        """(sharded by TP, replicated on every TP rank) parameters of one layer's attention."""
        h = self.hidden
        if self.is_mla:
            qk_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
            if self.q_lora_rank:
                q_sharded, q_replicated = self.q_lora_rank * self.heads * qk_dim, h * self.q_lora_rank
            else:
                q_sharded, q_replicated = h * self.heads * qk_dim, 0
            kv_sharded = self.kv_lora_rank * self.heads * (self.qk_nope_head_dim + self.v_head_dim)
            out = self.heads * self.v_head_dim * h
            # vLLM keeps the low-rank "a" projections whole on every TP rank.
            kv_replicated = h * (self.kv_lora_rank + self.qk_rope_head_dim)
            return q_sharded + kv_sharded + out, q_replicated + kv_replicated
        qkv = h * (self.heads + 2 * self.kv_heads) * self.head_dim
        bias = (self.heads + 2 * self.kv_heads) * self.head_dim if self.attention_bias else 0
        return qkv + bias + self.heads * self.head_dim * h, 0

    def dense_mlp_params(self) -> int:
        return 3 * self.hidden * self.intermediate

    def expert_params(self) -> int:
        """Routed experts of one MoE layer (split by EP, or by TP without EP)."""
        return self.routed_experts * 3 * self.hidden * self.moe_intermediate

    def shared_expert_params(self) -> int:
        return self.shared_experts * 3 * self.hidden * self.moe_intermediate

    def router_params(self) -> int:
        return self.hidden * self.routed_experts

    def total_params(self) -> int:
        sharded, replicated = self.attention_params()
        moe_layers = self.layers - self.dense_layers if self.is_moe else 0
        dense_layers = self.layers - moe_layers
        per_moe = self.expert_params() + self.shared_expert_params() + self.router_params()
        return (self.embedding_params() + self.layers * (sharded + replicated + 2 * self.hidden)
                + dense_layers * self.dense_mlp_params() + moe_layers * per_moe)

    # -- KV cache -----------------------------------------------------------------------

    def kv_bytes_per_token_per_layer(self, kv_dtype_bytes: float, tp: int = 1) -> float:
        """GQA: K and V heads (split by TP, at least one per rank). MLA: one latent, on every rank."""
        if self.is_mla:
            return (self.kv_lora_rank + self.qk_rope_head_dim) * kv_dtype_bytes
        heads_per_rank = max(1, math.ceil(self.kv_heads / tp))
        return 2 * heads_per_rank * self.head_dim * kv_dtype_bytes


def _linear_quant(quant: dict[str, Any]) -> str | None:
    method = str(quant.get("quant_method") or "").lower()
    if not method:
        return None
    if method in QUANT_BYTES:
        return method
    if method == "compressed-tensors":
        bits = _compressed_tensors_bits(quant)
        return "w4a16" if bits == 4 else "int8"
    if method in {"bitsandbytes", "gguf"}:
        return "w4a16" if quant.get("load_in_4bit") or quant.get("_load_in_4bit") else "int8"
    return "fp8" if "fp8" in method else None


def _compressed_tensors_bits(quant: dict[str, Any]) -> int:
    for group in (quant.get("config_groups") or {}).values():
        weights = group.get("weights") or {}
        if weights.get("num_bits"):
            return int(weights["num_bits"])
    return 8


# --------------------------------------------------------------------------- GPUs


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_mib: int  # per device, as nvidia-smi / rocm-smi report it
    usable_gib: float  # per device, as torch sees it (what vLLM multiplies by the utilization)
    fp8: bool
    interconnect: str  # "nvswitch", "nvlink", "pcie", "infinity-fabric"
    bandwidth_tbs: float  # HBM/GDDR bandwidth per device
    vendor: str = "nvidia"
    devices_per_package: int = 1  # MI250X: two GCDs, each its own device
    aliases: tuple[tuple[str, ...], ...] = ()
    arch: str = ""  # hopper, ada, ampere, cdna3, cdna2: which kernels vLLM can use

    @property
    def fast_interconnect(self) -> bool:
        return self.interconnect != "pcie"


def _aliases(*names: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(n.split()) for n in names)


GPUS: tuple[GpuSpec, ...] = (
    # H200: torch.cuda.mem_get_info total 139.80 GiB of 143,771 MiB (vLLM 0.26 on a real H200,
    # "total_memory=139.8GiB"; 0.9 requested 125.82 GiB). H20-3e carries the same 141 GB part.
    GpuSpec("H200", 143771, 139.80, True, "nvswitch", 4.8, aliases=_aliases("h200", "h200 sxm", "h200 nvl"), arch="hopper"),
    GpuSpec("H20-3e", 143771, 139.80, True, "nvswitch", 4.0, aliases=_aliases("h20 3e"), arch="hopper"),
    GpuSpec("H100 SXM", 81559, 79.18, True, "nvswitch", 3.35,
            aliases=_aliases("h100", "h100 sxm", "h100 sxm5", "h100 hbm3", "h100 80gb hbm3"), arch="hopper"),
    GpuSpec("H100 PCIe", 81559, 79.18, True, "pcie", 2.0, aliases=_aliases("h100 pcie", "h100 80gb pcie"), arch="hopper"),
    GpuSpec("H20", 97871, 95.0, True, "nvswitch", 4.0, aliases=_aliases("h20"), arch="hopper"),
    GpuSpec("A100 80GB", 81920, 79.15, False, "nvswitch", 2.04,
            aliases=_aliases("a100", "a100 80gb", "a100 sxm4 80gb", "a100 sxm", "a800"), arch="ampere"),
    GpuSpec("A100 40GB", 40960, 39.39, False, "nvswitch", 1.56, aliases=_aliases("a100 40gb", "a100 sxm4 40gb"), arch="ampere"),
    GpuSpec("L40S", 46068, 44.53, True, "pcie", 0.864, aliases=_aliases("l40s", "l40"), arch="ada"),
    GpuSpec("RTX 4090", 24564, 23.64, True, "pcie", 1.008, aliases=_aliases("4090", "rtx 4090"), arch="ada"),
    GpuSpec("RTX 3090", 24576, 23.58, False, "pcie", 0.936, aliases=_aliases("3090", "rtx 3090"), arch="ampere"),
    GpuSpec("MI300X", 196592, 191.5, True, "infinity-fabric", 5.3, vendor="amd", aliases=_aliases("mi300x", "mi300"), arch="cdna3"),
    GpuSpec("MI250X", 65520, 63.98, False, "infinity-fabric", 1.6, vendor="amd", devices_per_package=2,
            aliases=_aliases("mi250x", "mi250"), arch="cdna2"),
)

_NOISE = {"nvidia", "geforce", "amd", "instinct", "tesla", "radeon", "gpu", "oam"}


def _tokens(name: str) -> set[str]:
    words = re.sub(r"[^a-z0-9]+", " ", name.lower()).split()
    return {w for w in words if w not in _NOISE}


def find_gpu(name: str) -> GpuSpec | None:
    """Fuzzy: 'H200', 'NVIDIA H200', 'h100-sxm', 'NVIDIA A100-SXM4-80GB', 'GeForce RTX 4090'."""
    words = _tokens(name)
    squashed = "".join(sorted(words, key=name.lower().find))
    best: tuple[int, GpuSpec] | None = None
    for gpu in GPUS:
        for alias in gpu.aliases:
            hit = set(alias) <= words or (len(alias) == 1 and alias[0] in squashed and len(alias[0]) >= 4)
            if hit and (best is None or len(alias) > best[0]):
                best = (len(alias), gpu)
    return best[1] if best else None


def custom_gpu(memory_mib: int, like: GpuSpec | None = None, name: str | None = None) -> GpuSpec:
    """A GPU known only by its memory (real nvidia-smi facts): keep the catalog's traits if known."""
    base = like or GpuSpec(name or f"GPU {memory_mib} MiB", memory_mib, 0.0, False, "pcie", 1.0)
    # torch sees ~0.5% less than nvidia-smi (driver reservations): measured 0.4–0.7% on H100/H200/RTX.
    ratio = base.usable_gib * 1024 / base.memory_mib if base.usable_gib else 0.995
    return GpuSpec(name or base.name, memory_mib, round(memory_mib * ratio / 1024, 2), base.fp8,
                   base.interconnect, base.bandwidth_tbs, base.vendor, 1, base.aliases, base.arch)
