"""The host's NVIDIA GPUs as nvidia-smi lists them: the one GPU fact the capacity plan (roles/_plan.py)
reads as well as the gpu_host stage, so it lives below both. `pyinfra @local fact
roles.gpu_host.facts.Gpus` still names it (roles/gpu_host/facts.py hands it on)."""

from __future__ import annotations

from pyinfra.api import FactBase

from r1deploy.gpu import nvidia as gpu


def _text(output: list[str]) -> str:
    return "\n".join(output) + "\n"


class Gpus(FactBase):
    """nvidia-smi --query-gpu: a GpuInventory (status ok | no-gpu | no-driver | smi-failed)."""

    def command(self) -> str:
        return gpu.PROBES["query_gpu"][1]

    @staticmethod
    def default():
        return gpu.GpuInventory("no-driver", detail="no output")

    def process(self, output):
        return gpu.parse_query_gpu(_text(output))
