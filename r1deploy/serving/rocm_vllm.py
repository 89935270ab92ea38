"""vLLM on AMD ROCm hosts: AMD's ROCm vLLM container run by podman as the systemd service.

Why the container and not wheels: see roles/gpu_host/amd.py. What the host gives the
container: the GPUs (/dev/kfd, /dev/dri), the render/video groups, host networking (vLLM
binds vllm_host:vllm_port as on CUDA hosts), the model cache and the rendered config
directory at the same paths, and the rendered environment file. For the lead's unit
rendering (render.py): `exec_start(...)` is the ExecStart of r1-vllm.service on ROCm nodes.

The recipe environment is the planner's (r1deploy.planner.recipe_env): VLLM_ROCM_USE_AITER=1
on MI300-class GPUs (CDNA3); `recipe_env_for(spec)` gives it for service_env.
"""

from __future__ import annotations

import shlex

DEVICES = ("/dev/kfd", "/dev/dri")


def recipe_env_for(spec) -> dict[str, str]:
    """The planner's ROCm recipe env for the spec's GPU (plan_gpu), else nothing."""
    if spec.vllm.device != "rocm" or not spec.plan.gpu:
        return {}
    from r1deploy.planner import recipe_env
    from r1deploy.planner.catalog import find_gpu

    gpu = find_gpu(spec.plan.gpu)
    if gpu is None or gpu.vendor != "amd":
        return {}
    # recipe_env reads the model's architecture only for NVIDIA paths; CDNA3 returns first.
    return recipe_env(None, gpu) if gpu.arch == "cdna3" else {}


def exec_start(image: str, env_file: str, mounts: list[str], name: str = "r1-vllm",
               vllm_args: str = "vllm serve") -> str:
    """podman run in the foreground (systemd supervises it; --rm so a restart is clean)."""
    if not image or ":" not in image.rsplit("/", 1)[-1]:
        raise ValueError(f"the ROCm vLLM image must carry a tag (pin a release), not {image!r}")
    parts = ["/usr/bin/podman", "run", "--rm", f"--name={name}", "--network=host", "--ipc=host",
             "--group-add=keep-groups", "--security-opt=seccomp=unconfined", "--cap-add=SYS_PTRACE",
             f"--env-file={env_file}", *[f"--device={d}" for d in DEVICES],
             *[f"--volume={m}:{m}" for m in mounts], image, *shlex.split(vllm_args)]
    return " ".join(shlex.quote(p) for p in parts)
