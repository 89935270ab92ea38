"""Inventory of the real-H200 proof node: one NVIDIA H200, driven with `pyinfra @local`.

The host has no systemd and no network, so the weights are a weight-less checkpoint at the
real model's shape (bench/h200/make_checkpoint.py) that vLLM fills with random values
(`load-format: dummy`, passed through the spec's vllm_extra_args like any other engine arg).
Everything else is what an H200 node in a real fleet gets: the capacity plan for an H200,
the R1 reasoning parser, NVLink multicast off (the device host is shared), the GPU gate.

    r1deploy check bench/h200/h200_node.py
    r1deploy render --inventory bench/h200/h200_node.py --host @local --out DIR
    r1deploy gpu-check --inventory bench/h200/h200_node.py --host @local

Environment overrides (used by bench/h200/*.sh): R1_H200_MODEL (catalog repo id),
R1_H200_MODEL_ROOT, R1_H200_MAX_MODEL_LEN, R1_H200_GPU_UTIL, R1_H200_FP8 (1: plan_fp8),
R1_H200_SLO ("TTFT_MS,TPOT_MS", the monitor SLO the plan is sized for), R1_H200_KV_OFFLOAD (auto | GiB), R1_H200_HOST_MEMORY_GIB
(plan_host_memory_gib: the KV offload to host RAM is sized from it; unset: not planned).
"""

import os

_model = os.environ.get("R1_H200_MODEL", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
# bench/h200/slo.py: the FP8 plan (plan_fp8) and the SLO it is sized for ("TTFT_MS,TPOT_MS").
_fp8 = os.environ.get("R1_H200_FP8", "") == "1"
_slo = [float(x) for x in os.environ.get("R1_H200_SLO", "2000,100").split(",")]

h200 = [
    ("@local", {
        "fleet_env": "lab",
        "fleet_name": "h200-proof",
        "model_repo_id": _model,
        # Not a Hub commit: the id of "these config files, random weights" (sha1 of a fixed phrase).
        "model_revision": "d6fd65ee39c63957c359f7aae16a756c22264d6f",
        "model_root": os.environ.get("R1_H200_MODEL_ROOT", "/tmp/r1models"),
        "model_disk_margin_gib": 1,
        "install_vllm_version": "0.26.0",
        "vllm_host": "127.0.0.1",
        "vllm_port": 8000,
        "vllm_max_model_len": int(os.environ.get("R1_H200_MAX_MODEL_LEN", "32768")),
        "vllm_gpu_memory_utilization": float(os.environ.get("R1_H200_GPU_UTIL", "0.9")),
        "vllm_extra_args": {"load-format": "dummy"},
        "vllm_nvlink_multicast": False,
        # This host carries no FlashInfer (bench/h200/README.md): vLLM 0.26's sampler imports it
        # unless told to use PyTorch's top-p/top-k sampler.
        "vllm_env": {"VLLM_USE_FLASHINFER_SAMPLER": "0"},
        "vllm_startup_timeout_s": 600,
        "plan_gpu": "H200",
        "plan_fp8": _fp8,
        "plan_host_memory_gib": int(os.environ["R1_H200_HOST_MEMORY_GIB"]) if os.environ.get(
            "R1_H200_HOST_MEMORY_GIB") else None,
        # KV offload is opt-in (vllm_kv_offload_gib): R1_H200_KV_OFFLOAD=auto (sized from RAM) or GiB.
        "vllm_kv_offload_gib": (lambda v: None if not v else v if v == "auto" else float(v))(
            os.environ.get("R1_H200_KV_OFFLOAD", "")),
        "monitor_slo_ttft_p99_s": _slo[0] / 1000,
        "monitor_slo_tpot_p99_ms": _slo[1],
        "plan_gpus_per_node": 1,
        "gpu_expected_model": "H200",
        "gpu_expected_count": 1,
        "gpu_min_memory_mib": 143000,
        "gpu_driver_branch": "580",
        "gpu_fabric_manager": "no",
        "gpu_allow_reboot": False,
        "smoke_max_tokens": 32,
    }),
]
