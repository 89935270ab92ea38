"""Planner vs vLLM: predict each KV-cache size vLLM printed in a public log, side by side.

Each observation records the setup that produced the log line (model, GPU, parallelism,
max model len, memory utilization, vLLM generation); the planner sees only that setup.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from r1deploy.planner import ENGINES, ModelSpec, Plan, plan
from r1deploy.planner.catalog import GpuSpec, custom_gpu, find_gpu, find_model

OBSERVATIONS = Path(__file__).resolve().parents[2] / "tests" / "data" / "vllm_kv_observations.json"


@dataclass(frozen=True)
class Row:
    id: str
    model: str
    gpu: str
    layout: str
    max_model_len: int
    utilization: float
    engine: str
    metric: str  # "tokens" or "GiB"
    observed: float
    predicted: float
    source: str

    @property
    def error(self) -> float:
        return (self.predicted - self.observed) / self.observed


def load_observations(path: Path = OBSERVATIONS) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["observations"]


def _model(obs: dict[str, Any]) -> ModelSpec:
    entry = find_model(obs["model"])
    config = {**entry.config, **obs.get("config_overrides", {})}
    return ModelSpec(entry.name, ModelSpec.from_config(entry.name, config).arch, entry)


def _gpu(obs: dict[str, Any]) -> GpuSpec:
    if obs.get("device") == "cpu":
        return custom_gpu(1024, name="cpu")
    if "gpu_usable_gib" in obs:
        base = custom_gpu(obs["gpu_memory_mib"], name=obs["gpu"])
        return replace(base, usable_gib=obs["gpu_usable_gib"])
    gpu = find_gpu(obs["gpu"])
    if obs.get("gpu_p2p") is False:  # custom all-reduce off: treat links like PCIe
        gpu = replace(gpu, interconnect="pcie")
    return gpu


def predict(obs: dict[str, Any]) -> Plan:
    engine = ENGINES[obs["engine"]]
    if obs.get("max_num_batched_tokens"):
        engine = replace(engine, max_num_batched_tokens=obs["max_num_batched_tokens"])
    return plan(_model(obs), _gpu(obs), obs["gpus_per_node"], obs["nodes"],
                max_model_len=obs["max_model_len"], gpu_memory_utilization=obs["gpu_memory_utilization"],
                kv_cache_dtype=obs.get("kv_cache_dtype", "auto"), quantization=obs.get("quantization"),
                tensor_parallel_size=obs["tensor_parallel_size"],
                pipeline_parallel_size=obs["pipeline_parallel_size"],
                data_parallel_size=obs["data_parallel_size"], engine=engine,
                device=obs.get("device", "cuda"), cpu_kvcache_space_gib=obs.get("cpu_kvcache_space_gib", 4),
                suggest=False)


def compare(obs: dict[str, Any]) -> Row:
    p = predict(obs)
    seen = obs["observed"]
    if "kv_cache_tokens" in seen:
        metric, observed, predicted = "tokens", seen["kv_cache_tokens"], p.kv_cache_tokens
    else:
        metric, observed, predicted = "GiB", seen["kv_cache_gib"], p.kv_cache_gib_per_gpu
    layout = f"TP{obs['tensor_parallel_size']}×PP{obs['pipeline_parallel_size']}"
    return Row(obs["id"], obs["model"], obs["gpu"], layout, obs["max_model_len"], obs["gpu_memory_utilization"],
               obs["engine"], metric, observed, predicted, obs["source"])


def agreement(path: Path = OBSERVATIONS) -> list[Row]:
    return [compare(o) for o in load_observations(path)]


_KV_LINE = re.compile(r"(?:GPU|CPU|XPU|TPU|HPU)(?: \+ host)? KV cache size: ([0-9,]+) tokens")


def kv_tokens_from_log(text: str) -> int | None:
    """The "GPU KV cache size: N tokens" a vLLM server printed ("CPU KV cache size" on the CPU build)."""
    found = _KV_LINE.findall(text)
    return int(found[-1].replace(",", "")) if found else None
