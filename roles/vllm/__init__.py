"""vLLM: a versioned virtualenv per release of the engine, from the spec's index or wheelhouse."""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, server
from r1deploy.roles._pip import pinned
from r1deploy.roles._plan import host_plan
from r1deploy.roles._rollout import track
from r1deploy.roles._spec import host_spec
from r1deploy.roles.base import pip_source_args, venv_packages

from r1deploy.serving.ep_kernels import fallback_note, import_check, kernels_for
from r1deploy.serving.install_plan import engine_os_packages, engine_pins
from r1deploy.serving.render import vllm_venv


@deploy("vLLM")
def vllm() -> None:
    spec = host_spec()
    venv = vllm_venv(spec)  # side by side per version: an upgrade never breaks the running one
    wanted = engine_pins(spec)
    toolchain = engine_os_packages(spec)
    if toolchain:
        track(apt.packages(name=f"OS packages of the engine: {', '.join(toolchain)}", packages=toolchain,
                           no_recommends=True))
    venv_packages(f"Install {wanted[0]}", venv, wanted, spec)
    if spec.install.vllm_without:
        # PyPI's CUDA torchvision next to the CPU torch breaks `import transformers`.
        track(pinned(name="Remove conflicting packages", venv=venv, requirements=spec.install.vllm_without,
                     present=False))
    _ep_kernels(spec, venv)


def _ep_kernels(spec, venv: str) -> None:
    """DeepGEMM and DeepEP where the plan runs DP + EP on Hopper (r1deploy/serving/ep_kernels.py),
    after vLLM (they build against its torch), from the same index or wheelhouse; the import check
    fails the deploy here, before the serve stage restarts anything."""
    plan = host_plan(spec)
    note = fallback_note(spec, plan)
    if note:
        host.log(note)
    kernels = kernels_for(spec, plan)
    if not kernels:
        return
    track(pinned(name="Install expert-parallel kernels", venv=venv, requirements=kernels,
                 source_args=pip_source_args(spec)))
    server.shell(name="Expert-parallel kernels import", commands=[import_check(venv, kernels)])
