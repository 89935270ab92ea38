"""Operation tests for the AMD path of roles.gpu_host: facts injected per OS (Ubuntu 22.04 /
24.04) and ROCm release, commands asserted. Nothing connects (tests/factharness.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import KernelVersion, LinuxDistribution, Which

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]
from factharness import World, changed_ops, plan  # noqa: E402
from r1deploy.roles.gpu_host import facts, gpu_host, ops  # noqa: E402
from r1deploy.roles.gpu_host.amd import REPO_PIN, SOURCES_FILE  # noqa: E402
from r1deploy.roles.gpu_host.rocm_platforms import KEYRING, ROCM_PLATFORMS, repo_pin  # noqa: E402
from r1deploy.roles.gpu_host.versions import preferences  # noqa: E402

MODEL = {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": "a" * 40, "gpu_vendor": "auto"}
OS = {"ubuntu2204": ("22.04", "jammy", "5.15.0-160-generic"), "ubuntu2404": ("24.04", "noble", "6.8.0-88-generic")}
DKMS = {"6.4.1": "1:6.12.12.60401-2164967.24.04", "6.3.3": "1:6.10.5.60303-2125197.24.04"}
SMI = {"6.4.1": "25.5.1.60401-83~24.04", "6.3.3": "25.3.0.60303-1~24.04"}
ROCM_SMI = {"6.4.1": "7.5.0.60401-83~24.04", "6.3.3": "7.4.0.60303-1~24.04"}
REPO = {"amdgpu-dkms": list(DKMS.values()), "amd-smi-lib": list(SMI.values()), "rocm-smi-lib": list(ROCM_SMI.values())}


def world(os_key="ubuntu2404", loaded=None, packages=None, files=None, groups=("vllm",), repo=None):
    version, _, kernel = OS[os_key]
    return World(facts={
        LinuxDistribution: {"name": "Ubuntu", "release_meta": {"ID": "ubuntu", "VERSION_ID": version}},
        KernelVersion: kernel,
        Which: lambda command: "/usr/bin/curl" if command == "curl" else None,
        facts.PciGpus: {"amd": [f"0000:{b:02x}:00.0" for b in range(8)]},
        facts.AmdPackages: lambda: dict(packages or {}),
        facts.AmdSmi: lambda probe, simulated=False: (loaded or "R1DEPLOY_MISSING amdgpu") + "\n",
        facts.UserGroups: lambda user: list(groups) if groups is not None else None,
    }, packages=dict(packages or {}), files=dict(files or {}), repo=REPO if repo is None else repo)


def converged(os_key="ubuntu2404", rocm="6.4.1"):
    _, codename, kernel = OS[os_key]
    platform = ROCM_PLATFORMS[("ubuntu", OS[os_key][0])]
    packages = {"amdgpu-dkms": (DKMS[rocm], True), "amd-smi-lib": (SMI[rocm], True),
                "rocm-smi-lib": (ROCM_SMI[rocm], True),
                f"linux-headers-{kernel}": ("1", False), f"linux-modules-extra-{kernel}": ("1", False)}
    files = {KEYRING: "key", SOURCES_FILE: platform.sources(None, rocm, None),
             REPO_PIN: repo_pin(),
             "/etc/apt/preferences.d/r1deploy-amdgpu": preferences(
                 ["amdgpu-dkms"], DKMS[rocm], "the amdgpu driver moves only when the spec says so"),
             "/etc/apt/preferences.d/r1deploy-amd-smi-lib": preferences(
                 ["amd-smi-lib"], SMI[rocm], f"the management tools of ROCm {rocm}"),
             "/etc/apt/preferences.d/r1deploy-rocm-smi-lib": preferences(
                 ["rocm-smi-lib"], ROCM_SMI[rocm], f"the management tools of ROCm {rocm}")}
    loaded = ".".join(DKMS[rocm].split(":")[1].split(".")[:3])
    return world(os_key, loaded=loaded, packages=packages, files=files, groups=("vllm", "render", "video"))


def run(w: World, **data) -> list[str]:
    return plan(gpu_host, {"gpu-1": ({**MODEL, **data}, w)})[1]["gpu-1"]


def has(commands, text):
    return any(text in c for c in commands)


@pytest.mark.parametrize("os_key", list(OS))
@pytest.mark.parametrize("rocm", ["6.3.3", "6.4.1"])
def test_fresh_amd_host_gets_repos_pinned_driver_groups_and_reboot(os_key, rocm):
    _, codename, kernel = OS[os_key]
    cmds = run(world(os_key), gpu_rocm_version=rocm)
    assert has(cmds, "https://repo.radeon.com/rocm/rocm.gpg.key") and has(cmds, "/etc/apt/keyrings/rocm.asc")
    assert has(cmds, f"upload {SOURCES_FILE}\ndeb [arch=amd64 signed-by=/etc/apt/keyrings/rocm.asc] "
                     f"https://repo.radeon.com/amdgpu/{rocm}/ubuntu {codename} main\n"
                     f"deb [arch=amd64 signed-by=/etc/apt/keyrings/rocm.asc] https://repo.radeon.com/rocm/apt/{rocm} {codename} main")
    assert has(cmds, "Pin: release o=repo.radeon.com\nPin-Priority: 600")
    assert has(cmds, f"linux-headers-{kernel} linux-modules-extra-{kernel}")
    assert has(cmds, f"amdgpu-dkms={DKMS[rocm]}") and has(cmds, "apt-mark hold amdgpu-dkms")
    assert has(cmds, f"amd-smi-lib={SMI[rocm]}") and has(cmds, f"rocm-smi-lib={ROCM_SMI[rocm]}")
    assert has(cmds, "usermod -a -G render,video vllm")
    module = ".".join(DKMS[rocm].split(":")[1].split(".")[:3])
    assert has(cmds, f"# reboot: running amdgpu none, installed amdgpu-dkms builds {module}")
    assert has(cmds, "( sleep 1 && reboot )")
    assert not has(cmds, "nvidia")


@pytest.mark.parametrize("os_key", list(OS))
def test_converged_amd_host_changes_nothing(os_key):
    state, commands = plan(gpu_host, {"gpu-1": (MODEL, converged(os_key))})
    assert commands["gpu-1"] == []
    assert changed_ops(state, state.inventory.get_host("gpu-1")) == []


def test_rocm_upgrade_moves_the_driver_and_reboots():
    cmds = run(converged(rocm="6.3.3"), gpu_rocm_version="6.4.1")
    assert has(cmds, "/amdgpu/6.4.1/ubuntu noble main") and has(cmds, "apt-get update")
    assert has(cmds, f"amdgpu-dkms={DKMS['6.4.1']}")
    assert has(cmds, "running amdgpu 6.10.5, installed amdgpu-dkms builds 6.12.12")


def test_in_tree_amdgpu_needs_a_reboot_and_none_when_forbidden_stops():
    w = converged()
    w.facts[facts.AmdSmi] = lambda probe, simulated=False: "in-tree\n"
    cmds = run(w, gpu_allow_reboot=False)
    assert len(cmds) == 1 and "python _stop" in cmds[0] and "running amdgpu in-tree" in cmds[0]


def test_mirror_url_and_separate_amdgpu_release():
    cmds = run(world(), gpu_rocm_repo_url="http://mirror.example/radeon/", gpu_amdgpu_version="6.4.1")
    assert has(cmds, "http://mirror.example/radeon/rocm/rocm.gpg.key")
    assert has(cmds, "http://mirror.example/radeon/amdgpu/6.4.1/ubuntu noble main")
    assert has(cmds, "Pin: release o=repo.radeon.com")  # the Release Origin a mirror keeps


def test_missing_service_user_is_created_then_grouped():
    cmds = run(world(groups=None))
    assert has(cmds, "useradd --system --no-create-home --shell /usr/sbin/nologin vllm")
    assert has(cmds, "usermod -a -G render,video vllm")


def test_debian_is_refused_for_amd():
    w = world()
    w.facts[LinuxDistribution] = {"release_meta": {"ID": "debian", "VERSION_ID": "12", "PRETTY_NAME": "Debian 12"}}
    with pytest.raises(DeployError, match="AMD GPU hosts must run Ubuntu 22.04/24.04, not Debian 12"):
        run(w)


def test_no_gpu_and_mixed_vendors_need_gpu_vendor():
    w = world()
    w.facts[facts.PciGpus] = {}
    with pytest.raises(DeployError, match="no NVIDIA or AMD GPU on the PCI bus: set gpu_vendor"):
        run(w)
    w.facts[facts.PciGpus] = {"amd": ["a"], "nvidia": ["b"]}
    with pytest.raises(DeployError, match="GPUs of amd and nvidia on one host"):
        run(w)


def test_reboot_calls_the_drain_hook(monkeypatch):
    calls = []
    monkeypatch.setattr(ops.drain, "before_reboot", lambda host, why: calls.append(why) or iter(()))
    run(world())
    assert calls and calls[0].startswith("running amdgpu none")
