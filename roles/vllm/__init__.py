"""vLLM: a versioned virtualenv per release of the engine, from the spec's index or wheelhouse."""

from pyinfra.api import deploy

from r1deploy.render import vllm_venv
from roles._pip import pinned
from roles._rollout import track
from roles._spec import host_spec
from roles.base import venv_packages


@deploy("vLLM")
def vllm() -> None:
    spec = host_spec()
    venv = vllm_venv(spec)  # side by side per version: an upgrade never breaks the running one
    wanted = [f"{spec.install.vllm_package}=={spec.install.vllm_version}", *spec.install.vllm_with]
    venv_packages(f"Install {wanted[0]}", venv, wanted, spec)
    if spec.install.vllm_without:
        # PyPI's CUDA torchvision next to the CPU torch breaks `import transformers`.
        track(pinned(name="Remove conflicting packages", venv=venv, requirements=spec.install.vllm_without,
                     present=False))
