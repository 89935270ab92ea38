"""Quantize: llm-compressor `oneshot` in its own venv, a quality gate, and an output the serve stage names.

Runs between weights and vLLM when `quant_scheme` is not "none". The output directory
(`<commit>-<scheme>-<recipe hash>` beside the pulled commit) is named on the controller from the
spec (r1deploy.serving.render.quantized_dir), so the serve stage renders the same path; its manifest,
read as a fact, makes a converge with the same inputs do no work and still report the gate's
numbers. A model the catalog knows as natively quantized (R1 671B ships FP8) is skipped: the
stage says so, and the source is served.
"""

import json
import shlex

from pyinfra import host, logger
from pyinfra.api import DeployError, OperationError, deploy
from pyinfra.operations import python, server
from r1deploy.roles._pip import pinned
from r1deploy.roles._rollout import remote, track
from r1deploy.roles._spec import host_spec
from r1deploy.roles.base import venv_packages
from r1deploy.roles.quantize.facts import QuantManifest

from r1deploy.serving.install_plan import quant_pins
from r1deploy.serving.quantize import gate
from r1deploy.serving.render import agent_venv, native_quantization, quant_venv, quantized_dir

# Installed next to llm-compressor and removed after: PyPI's CUDA torchvision breaks CPU torch.
WITHOUT = ["torchvision", "torchaudio", "torchcodec"]


def _command(spec, venv: str, src: str) -> str:
    q = spec.quant
    argv = [f"{venv}/bin/python", "-m", "r1deploy.serving.quantize", "run", "--src", src, "--scheme", q.scheme,
            "--llmcompressor-version", q.llmcompressor_version, "--max-loss-pct", str(q.max_loss_pct),
            "--fail-if-native"]
    if q.torch_version:
        argv += ["--torch-version", q.torch_version]
    env = (f"PYTHONPATH={agent_venv(spec)}/src PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 "
           "HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false")
    return f"runuser -u {spec.vllm.user} -- sh -c {shlex.quote(f'{env} {shlex.join(argv)}')}"


@deploy("Quantize")
def quantize() -> None:
    spec = host_spec()
    q = spec.quant
    native = native_quantization(spec)
    if native:
        logger.warning(f"{host.name}: {spec.model.repo_id} is natively quantized ({native}); "
                       f"quant_scheme={q.scheme!r} skipped, the source is served as is")
        return
    out = quantized_dir(spec)
    venv = quant_venv(spec)
    venv_packages(f"Install llmcompressor=={q.llmcompressor_version}", venv, quant_pins(spec), spec)
    track(pinned(name="Remove conflicting packages (llm-compressor venv)", venv=venv, requirements=WITHOUT,
                 present=False))
    manifest = host.get_fact(QuantManifest, path=f"{out}/.r1deploy-quant.json")
    if manifest.get("source_commit") == spec.model.revision and out.endswith(manifest.get("recipe_hash", "-")):
        passed, line = gate(manifest, q.max_loss_pct)
        if not passed:
            raise DeployError(f"{host.name}: quality gate failed, not serving {out}: {line}")
        logger.info(f"{host.name}: quantized model in place, {line}")
        return
    run = track(server.shell(name=f"Quantize {spec.model.name} ({q.scheme}, gate {q.max_loss_pct}%)",
                             commands=[_command(spec, venv, spec.model.local_dir)]))
    python.call(name="Quality gate of the quantized model", function=_report, path=f"{out}/.r1deploy-quant.json",
                max_loss_pct=q.max_loss_pct, _if=run.did_change)


def _report(path: str, max_loss_pct: float) -> None:
    """Show both numbers after a quantization ran (the run itself already failed over the limit)."""
    passed, line = gate(json.loads(remote(f"cat {path}", "quantize manifest")), max_loss_pct)
    host.log(f"quality gate {'passed' if passed else 'FAILED'}: {line}")
    if not passed:
        raise OperationError(f"quality gate failed: {line}")
