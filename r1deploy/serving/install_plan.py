"""What a host's stages pip-install, as exact pins: one list the roles install from and CI resolves
against the package index (tests/test_index_pins.py), so a pin that cannot install fails CI. Pure."""

from __future__ import annotations

from typing import Any

from r1deploy.spec import Spec


def engine_pins(spec: Spec) -> list[str]:
    """The vLLM venv: vLLM, what is pinned next to it, and on a P/D node its KV connector's package
    (install_pd_packages: nixl; r1deploy/serving/pd.py) (roles/vllm)."""
    from r1deploy.serving.pd import pins as pd_pins

    return [f"{spec.install.vllm_package}=={spec.install.vllm_version}", *spec.install.vllm_with, *pd_pins(spec)]


# Triton builds its launcher in C when the engine starts (GPU kernels, also in eager mode) and torch's
# inductor builds C++ (torch.compile, CPU included): a compiler and Python's headers on the node.
# Only a CPU engine that runs eager compiles nothing.
JIT_TOOLCHAIN = ["gcc", "g++", "python3-dev"]
# vLLM's CPU kernels (vllm._C) link libnuma: without it the engine core dies at start.
CPU_ENGINE_LIBS = ["libnuma1"]


def engine_os_packages(spec: Spec) -> list[str]:
    """Debian packages the engine needs beside its venv (roles/vllm)."""
    if spec.vllm.device != "cpu":
        return list(JIT_TOOLCHAIN)
    v = spec.vllm
    eager = bool(v.extra_args.get("enforce-eager") or v.extra_args.get("enforce_eager"))
    # Tensor/pipeline-parallel CPU workers compile with inductor even when eager (a TP2 serving group's
    # first request died on "InvalidCxxCompiler: No working C++ compiler found": tests/test_lab_group.py).
    sharded = (v.tensor_parallel_size or 1) > 1 or (v.pipeline_parallel_size or 1) > 1
    return CPU_ENGINE_LIBS + ([] if eager and not sharded else JIT_TOOLCHAIN)


def router_pins(spec: Spec) -> list[str]:
    """The gateway's router venv (roles/gateway)."""
    return [f"vllm-router=={spec.install.router_version}"]


def quant_pins(spec: Spec) -> list[str]:
    """The llm-compressor venv (roles/quantize), where the model is quantized at all."""
    q = spec.quant
    return [f"llmcompressor=={q.llmcompressor_version}", *([f"torch=={q.torch_version}"] if q.torch_version else [])]


def install_plan(spec: Spec, plan: Any) -> list[str]:
    """Every pin the host's stages install (the agent, its role's venvs, the plan's EP kernels)."""
    from r1deploy import AGENT_REQUIREMENTS
    from r1deploy.serving.ep_kernels import kernels_for
    from r1deploy.serving.render import quantized_dir

    pins = list(AGENT_REQUIREMENTS)
    if spec.fleet.role == "gateway":
        return pins + router_pins(spec)
    pins += engine_pins(spec) + kernels_for(spec, plan)
    return pins + (quant_pins(spec) if quantized_dir(spec) else [])
