"""Operation tests for roles.gpu_host: facts injected per OS and hardware, commands asserted.

Hosts: Ubuntu 22.04 / 24.04 / Debian 12; PCIe or NVSwitch (HGX); driver absent, older or
current. Nothing connects: tests/factharness.py answers facts and reads the planned commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.deb import DebPackage
from pyinfra.facts.server import KernelVersion, LinuxDistribution, Which

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # tests/ and the repo root
from factharness import World, changed_ops, plan  # noqa: E402
from r1deploy.roles.gpu_host import facts, gpu_host, gpu_verify, ops  # noqa: E402
from r1deploy.roles.gpu_host.platforms import NVIDIA_CUDA_REPO  # noqa: E402

from r1deploy.gpu import allreduce, dpkg  # noqa: E402
from r1deploy.gpu import health as gpu_health  # noqa: E402
from r1deploy.gpu import nvidia as gpu  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "gpu-hosts"
MODEL = {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": "a" * 40}
OS = {
    "ubuntu2204": ("ubuntu", "22.04", "5.15.0-160-generic"),
    "ubuntu2404": ("ubuntu", "24.04", "6.8.0-88-generic"),
    "debian12": ("debian", "12", "6.1.0-40-amd64"),
}
DRIVER = "580.159.04-0ubuntu1"
OLD_DRIVER = "580.126.09-0ubuntu1"
NCCL = "2.28.3-1+cuda13.0"
REPO = {
    "nvidia-open-580": [DRIVER, OLD_DRIVER],
    "nvidia-fabricmanager-580": ["580.159.04-1", "580.126.09-1"],
    "libnccl2": [NCCL, "2.27.7-1+cuda12.9"],
    "libnccl-dev": [NCCL, "2.27.7-1+cuda12.9"],
}
PERSISTENCED = "persistenced"


def world(os_key="ubuntu2404", nvswitches=0, loaded=None, packages=None, files=None, services=None, repo=None):
    os_id, version, kernel = OS[os_key]
    return World(
        facts={
            LinuxDistribution: {"name": os_id.title(), "release_meta": {"ID": os_id, "VERSION_ID": version}},
            KernelVersion: kernel,
            Which: lambda command: "/usr/bin/curl" if command == "curl" else None,
            DebPackage: None,
            facts.NvSwitches: nvswitches,
            facts.LoadedDriver: gpu.LoadedDriver(dpkg.upstream_version(loaded), True) if loaded else gpu.LoadedDriver(None),
            facts.PciGpus: {"nvidia": ["0000:18:00.0"]},
        },
        packages=dict(packages or {}), files=dict(files or {}), services=dict(services or {}),
        repo=REPO if repo is None else repo,
    )


def converged(os_key="ubuntu2404", nvswitches=0, base=None):
    """A host the role already finished: what its files, packages and services look like."""
    plat = {"ubuntu2204": "ubuntu2204", "ubuntu2404": "ubuntu2404", "debian12": "debian12"}[os_key]
    kernel = OS[os_key][2]
    packages = {"cuda-keyring": ("1.1-1", False), "nvidia-open-580": (DRIVER, True),
                "libnccl2": (NCCL, True), "libnccl-dev": (NCCL, True),
                f"linux-headers-{kernel}": ("1", False), "dkms": ("3", False), "pciutils": ("1:3.10", False)}
    services = {"nvidia-persistenced": (True, True)}
    if nvswitches:
        packages["nvidia-fabricmanager-580"] = ("580.159.04-1", True)
        services["nvidia-fabricmanager"] = (True, True)
    from r1deploy.roles import gpu_host as role
    from r1deploy.roles.gpu_host.versions import preferences

    url = f"{base or NVIDIA_CUDA_REPO}/{plat}/x86_64/"
    files = {
        f"/etc/apt/sources.list.d/cuda-{plat}-x86_64.list":
            f"deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] {url} /\n",
        role.NOUVEAU_CONF: role.NOUVEAU,
        role.PERSISTENCED_DROPIN: role.PERSISTENCED,
        "/etc/apt/preferences.d/r1deploy-nvidia-driver": preferences(
            ["nvidia-open-580"], DRIVER, "the NVIDIA driver moves only when the spec says so"),
        "/etc/apt/preferences.d/r1deploy-nccl": preferences(["libnccl2", "libnccl-dev"], NCCL, "NCCL built for CUDA 13"),
    }
    if nvswitches:
        files["/etc/apt/preferences.d/r1deploy-nvidia-fabricmanager"] = preferences(
            ["nvidia-fabricmanager-580"], "580.159.04-1", "fabric manager must equal the driver version exactly")
    return world(os_key, nvswitches, loaded=DRIVER, packages=packages, files=files, services=services)


def run(w: World, **data) -> list[str]:
    _, commands = plan(gpu_host, {"gpu-1": ({**MODEL, **data}, w)})
    return commands["gpu-1"]


def has(commands: list[str], text: str) -> bool:
    return any(text in c for c in commands)


@pytest.mark.parametrize("os_key", ["ubuntu2204", "ubuntu2404", "debian12"])
def test_fresh_pcie_host_gets_repo_pinned_driver_nccl_and_reboot(os_key):
    cmds = run(world(os_key))
    url = f"{NVIDIA_CUDA_REPO}/{os_key}/x86_64/"
    assert has(cmds, f"curl -sSLf {url}cuda-keyring_1.1-1_all.deb")
    assert has(cmds, f"upload /etc/apt/sources.list.d/cuda-{os_key}-x86_64.list\n"
                     f"deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] {url} /")
    assert has(cmds, "] apt-get update")
    assert has(cmds, "upload /etc/modprobe.d/blacklist-nouveau.conf") and has(cmds, "update-initramfs -u")
    assert has(cmds, f"linux-headers-{OS[os_key][2]} dkms")
    assert has(cmds, f"Package: nvidia-open-580\nPin: version {DRIVER}\nPin-Priority: 1001")
    assert has(cmds, f"--allow-change-held-packages -o Dpkg::Options::=--force-confdef "
                     f"-o Dpkg::Options::=--force-confold nvidia-open-580={DRIVER}")
    assert has(cmds, "apt-mark hold nvidia-open-580")
    assert has(cmds, f"libnccl2={NCCL} libnccl-dev={NCCL}") and has(cmds, "apt-mark hold libnccl2 libnccl-dev")
    assert has(cmds, "# reboot: running kernel module none, installed driver 580.159.04")
    assert has(cmds, "python _remember_boot") and has(cmds, "( sleep 1 && reboot )")
    assert has(cmds, "python _wait_for_new_boot")
    assert has(cmds, "systemctl start nvidia-persistenced.service")
    assert not has(cmds, "fabricmanager")
    # order: packages, then the reboot, then services started on the new driver
    index = {key: next(i for i, c in enumerate(cmds) if key in c)
             for key in ("nvidia-open-580=", "&& reboot", "start nvidia-persistenced")}
    assert index["nvidia-open-580="] < index["&& reboot"] < index["start nvidia-persistenced"]


def test_nvswitch_host_gets_fabric_manager_equal_to_driver():
    cmds = run(world("ubuntu2204", nvswitches=4))
    assert has(cmds, "nvidia-fabricmanager-580=580.159.04-1")  # upstream 580.159.04 == driver
    assert has(cmds, "Package: nvidia-fabricmanager-580\nPin: version 580.159.04-1")
    assert has(cmds, "apt-mark hold nvidia-fabricmanager-580")
    reboot = next(i for i, c in enumerate(cmds) if "&& reboot" in c)
    fm_start = next(i for i, c in enumerate(cmds) if "systemctl start nvidia-fabricmanager.service" in c)
    assert reboot < fm_start  # started after the new driver is loaded


def test_fabric_manager_forced_and_refused():
    assert has(run(world(), gpu_fabric_manager="yes"), "nvidia-fabricmanager-580=")
    assert not has(run(world(nvswitches=4), gpu_fabric_manager="no"), "fabricmanager")


@pytest.mark.parametrize("os_key,nvswitches", [("ubuntu2204", 4), ("ubuntu2404", 0), ("debian12", 0)])
def test_converged_host_changes_nothing(os_key, nvswitches):
    state, commands = plan(gpu_host, {"gpu-1": (MODEL, converged(os_key, nvswitches))})
    assert commands["gpu-1"] == []
    host = state.inventory.get_host("gpu-1")
    assert changed_ops(state, host) == []


def test_converged_with_mirror_url_changes_nothing():
    base = "http://mirror.lab:8080/cuda"
    assert run(converged(base=base), gpu_cuda_repo_url=base) == []
    # ...and moving back to NVIDIA's URL rewrites only the repository line
    cmds = run(converged(base=base))
    assert has(cmds, f"{NVIDIA_CUDA_REPO}/ubuntu2404/x86_64/ /") and has(cmds, "apt-get update")
    assert not has(cmds, "apt-get install")


def test_mirror_url_for_keyring_and_repo():
    cmds = run(world(), gpu_cuda_repo_url="http://10.0.0.5/cuda/")
    assert has(cmds, "curl -sSLf http://10.0.0.5/cuda/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb")
    assert has(cmds, "] http://10.0.0.5/cuda/ubuntu2404/x86_64/ /")
    assert not has(cmds, NVIDIA_CUDA_REPO)


def test_current_driver_is_kept_when_the_repo_has_a_newer_one():
    w = converged()
    w.packages["nvidia-open-580"] = (OLD_DRIVER, True)
    w.facts[facts.LoadedDriver] = gpu.LoadedDriver("580.126.09", True)
    w.files["/etc/apt/preferences.d/r1deploy-nvidia-driver"] = w.files[
        "/etc/apt/preferences.d/r1deploy-nvidia-driver"].replace(DRIVER, OLD_DRIVER)
    assert run(w) == []  # no surprise upgrade, no reboot: the branch is pinned, not "latest"


def test_older_driver_in_branch_upgrades_when_the_spec_names_a_version():
    w = converged()
    w.packages["nvidia-open-580"] = (OLD_DRIVER, True)
    w.facts[facts.LoadedDriver] = gpu.LoadedDriver("580.126.09", True)
    cmds = run(w, gpu_driver_version="580.159.04")
    assert has(cmds, f"nvidia-open-580={DRIVER}")
    assert has(cmds, "# reboot: running kernel module 580.126.09, installed driver 580.159.04")


def test_older_branch_and_flavor_are_replaced_in_one_transaction():
    w = world(loaded="570.195.03-0ubuntu1", packages={
        "cuda-keyring": ("1.1-1", False), "nvidia-driver-570": ("570.195.03-0ubuntu1", True)})
    cmds = run(w)
    assert has(cmds, f"nvidia-open-580={DRIVER} nvidia-driver-570-")
    assert has(cmds, "running kernel module 570.195.03, installed driver 580.159.04")


def test_reboot_forbidden_stops_the_host_with_reason():
    w = converged()
    w.facts[facts.LoadedDriver] = gpu.LoadedDriver("580.126.09", True)  # installed 580.159.04 waits for a boot
    cmds = run(w, gpu_allow_reboot=False)
    assert len(cmds) == 1 and "python _stop" in cmds[0]
    assert "reboot required (running kernel module 580.126.09, installed driver 580.159.04)" in cmds[0]
    assert "gpu_allow_reboot is False" in cmds[0]


def test_reboot_batches_are_rollout_turns_per_model_issue_21_item_1():
    """Issue 21 item 1: one reboot operation per batch of each model (gpu_reboot_batch_size replicas,
    the first a canary, never the whole model), each node's reboot only in its own batch; models side by side."""
    other = {"model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "model_revision": "b" * 40}
    hosts = {f"gpu-{i}": ({**MODEL, "gpu_reboot_batch_size": 2}, world()) for i in (1, 2, 3, 4)}
    hosts["gpu-9"] = ({**other}, world())
    state, cmds = plan(gpu_host, hosts)
    reboots = [h for h in state.get_op_order() if any("Reboot" in n for n in state.op_meta[h].names)]
    assert [sorted(state.op_meta[h].names)[0].rsplit(", ", 1)[1] for h in reboots] == ["batch 1/3", "batch 2/3",
                                                                                       "batch 3/3"]

    def batch_of(name):  # which batch's operation runs on the host (its _if)
        ops_of = state.ops[state.inventory.get_host(name)]
        return [i for i, h in enumerate(reboots) if ops_of[h].global_arguments["_if"]()]
    # R1: canary gpu-1, then gpu-2 + gpu-3, then gpu-4 (capped: one replica keeps serving); the distill alone.
    assert {n: batch_of(n) for n in hosts} == {"gpu-1": [0], "gpu-2": [1], "gpu-3": [1], "gpu-4": [2], "gpu-9": [0]}


def test_fabric_manager_skew_is_a_deploy_error_naming_both_versions():
    repo = {**REPO, "nvidia-fabricmanager-580": ["580.126.09-1"]}
    with pytest.raises(DeployError, match=r"nvidia-fabricmanager-580 must equal the driver version "
                                          r"580\.159\.04 exactly, but the repository offers 580\.126\.09-1"):
        run(world(nvswitches=4, repo=repo))


def test_installed_skewed_fabric_manager_is_moved_to_the_driver_version():
    w = converged(nvswitches=4)
    w.packages["nvidia-fabricmanager-580"] = ("580.126.09-1", True)
    cmds = run(w)
    assert has(cmds, "nvidia-fabricmanager-580=580.159.04-1") and not has(cmds, "reboot")


def test_repository_not_configured_yet_defers_the_version_to_execute_time():
    cmds = run(world(repo={}))
    assert has(cmds, "# nvidia-open-580: pin nvidia-open-580 580.*, version read from the "
                     "repository when executing")
    assert has(cmds, "# libnccl2 libnccl-dev: pin libnccl2 * matching")


def test_optional_toolkit_and_dcgm():
    cmds = run(world(), gpu_cuda_toolkit=True, gpu_dcgm=True)
    assert has(cmds, "install cuda-toolkit-13-0 datacenter-gpu-manager-4-cuda13")
    assert has(cmds, "systemctl start nvidia-dcgm.service")
    assert has(run(world(), gpu_cuda_toolkit=True, gpu_cuda_toolkit_version="13.1"), "cuda-toolkit-13-1")


def test_proprietary_modules_on_request():
    repo = {**REPO, "cuda-drivers-580": [DRIVER]}
    assert has(run(world(repo=repo), gpu_open_kernel_modules=False), f"cuda-drivers-580={DRIVER}")


def test_manage_false_skips_the_role():
    assert run(World(), gpu_manage=False) == []  # no fact is even read


@pytest.mark.parametrize("data,message", [
    ({"gpu_driver_version": "570.195.03"}, "not on gpu_driver_branch 580"),
    ({"gpu_driver_branch": "999"}, "no known CUDA major"),
])
def test_bad_settings_fail_early(data, message):
    with pytest.raises(DeployError, match=message):
        run(world(), **data)


def test_unsupported_os_fails_early():
    w = world()
    w.facts[LinuxDistribution] = {"release_meta": {"ID": "rocky", "VERSION_ID": "9", "PRETTY_NAME": "Rocky Linux 9"}}
    with pytest.raises(DeployError, match="not Rocky Linux 9"):
        run(w)


# --- the gate as the role runs it, on facts parsed from recorded outputs ---------------


def recorded_world(folder: str) -> World:
    out = {n: ((FIX / folder / f).read_text() if (FIX / folder / f).is_file() else "")
           for n, (f, _) in gpu.PROBES.items()}
    return World(facts={
        facts.Gpus: gpu.parse_query_gpu(out["query_gpu"]),
        facts.LoadedDriver: gpu.parse_proc_version(out["proc_version"]),
        facts.GpuHealth: gpu.parse_smi_q(out["smi_q"]),
        facts.NvSwitches: gpu.parse_nvswitch_count(out["nvswitch"]),
        facts.FabricManagerState: gpu.parse_fabricmanager(out["fabricmanager"]),
        facts.NvLinkStatus: gpu.parse_nvlink_status(out["nvlink"]),
        facts.GpuVitals: gpu_health.vitals(out["smi_q"]),
        facts.KernelLog: out["kernel_log"] or CLEAN_BOOT,
        facts.PciGpus: {"nvidia": ["0000:18:00.0"]},
        facts.AllReduce: {"error": f"{allreduce.MISSING_TORCH} no python3"},  # no vLLM venv yet: omitted
    })


# HAND-MADE: the recordings carry no kernel log; a clean boot's lines stand for one.
CLEAN_BOOT = "[    5.301977] kernel: NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  580.159.04\n"


@pytest.mark.parametrize("folder,data,passes", [
    ("h200x1-ubuntu2404", {"gpu_expected_model": "NVIDIA H200", "gpu_expected_count": 1}, True),
    ("hgx8-nvswitch-ubuntu2204-handmade", {"gpu_expected_count": 8}, True),
    ("hgx8-nvswitch-gpu-missing-handmade", {"gpu_expected_count": 8}, False),
    ("hgx8-nvswitch-fm-down-handmade", {}, False),
    ("h200x2-xid79-handmade", {"gpu_expected_count": 2}, False),  # an XID in the kernel log
    ("h200x2-xid13-app-handmade", {"gpu_expected_count": 2}, True),
])
def test_gate_operation_passes_or_fails_the_host(folder, data, passes):
    w = recorded_world(folder)
    state, commands = plan(gpu_verify, {"gpu-1": (data, w)})
    assert commands["gpu-1"] == []  # prepare: the gate changes nothing
    host = state.inventory.get_host("gpu-1")
    state.is_executing = True
    from pyinfra.context import ctx_host, ctx_state
    with ctx_state.use(state), ctx_host.use(host):
        (op_hash,) = state.get_op_order()
        commands = list(state.ops[host][op_hash].command_generator())
        if passes:
            assert commands == []  # a pass changes nothing: a converged rerun reports no change
        else:
            (command,) = commands
            assert command.function is ops._stop and "GPU gate failed" in command.args[0]
            assert command.execute(state, host, {}) is False


def test_skew_found_only_when_executing_stops_before_the_driver_moves():
    """Fresh host: the repository is read at execute time; the driver step checks fabric
    manager first, so the host stops with the old driver in place."""
    from pyinfra.context import ctx_host, ctx_state

    w = world(nvswitches=4, repo={})
    state, _ = plan(gpu_host, {"gpu-1": (MODEL, w)})
    w.repo = {**REPO, "nvidia-fabricmanager-580": ["580.126.09-1"]}  # what apt update brought
    host = state.inventory.get_host("gpu-1")
    state.is_executing = True
    with ctx_state.use(state), ctx_host.use(host):
        (driver_op,) = [h for h in state.get_op_order() if "NVIDIA driver" in sorted(state.op_meta[h].names)[0]]
        (command,) = list(state.ops[host][driver_op].command_generator())
    assert command.function is ops._stop
    assert "must equal the driver version 580.159.04 exactly, but the repository offers 580.126.09-1" in command.args[0]


def test_stale_apt_lists_are_refreshed_when_a_pinned_version_is_missing():
    w = converged()
    cmds = run(w, gpu_driver_version="580.170.01")  # newer than this host's lists know
    assert has(cmds, "apt-get update")
    assert has(cmds, "# nvidia-open-580: pin nvidia-open-580 580.170.01, version read from")


def test_facts_run_for_real_through_pyinfra_local():
    """This machine has no NVIDIA driver: the real probes run and say so, no host failure."""
    import subprocess

    names = ["Gpus", "LoadedDriver", "GpuHealth", "GpuTopology", "NvLinkStatus", "NvSwitches",
             "FabricManagerState", "CudaStack", "NvidiaPackages", "BootId"]
    done = subprocess.run([str(Path(sys.executable).with_name("pyinfra")), "-y", "@local", "fact",
                           *[f"r1deploy.roles.gpu_host.facts.{n}" for n in names]],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout + done.stderr  # pyinfra prints headings on stderr, JSON on stdout
    # pyinfra heads each by the fact's own module: Gpus lives in roles/_gpus.py (issue 24 item 5)
    assert all(f"Fact data for: {getattr(facts, n).name}" in out for n in names)
    if not Path("/proc/driver/nvidia/version").exists():
        assert '"status": "no-driver"' in out and '"version": null' in out


# --- every (OS, branch, flavour) row of NVIDIA's names -----------------------------------

ROWS = [(os_key, branch, flavour) for os_key in OS for branch in ("570", "580", "590")
        for flavour in ("open", "proprietary")]
EXPECTED_NAME = {("570", "open"): "nvidia-open-570", ("570", "proprietary"): "cuda-drivers-570",
                 ("580", "open"): "nvidia-open-580", ("580", "proprietary"): "cuda-drivers-580",
                 ("590", "open"): "nvidia-open", ("590", "proprietary"): "cuda-drivers"}


@pytest.mark.parametrize("os_key,branch,flavour", ROWS)
def test_every_os_branch_flavour_installs_nvidias_name(os_key, branch, flavour):
    name = EXPECTED_NAME[(branch, flavour)]
    version = f"{branch}.100.01-1"
    fm = "nvidia-fabricmanager" if branch == "590" else f"nvidia-fabricmanager-{branch}"
    repo = {name: [version], fm: [f"{branch}.100.01-1"], "libnccl2": [NCCL, "2.27.7-1+cuda12.9"],
            "libnccl-dev": [NCCL, "2.27.7-1+cuda12.9"]}
    cmds = run(world(os_key, nvswitches=4, repo=repo), gpu_driver_branch=branch,
               gpu_open_kernel_modules=flavour == "open")
    assert has(cmds, f"{name}={version}") and has(cmds, f"apt-mark hold {name}")
    assert has(cmds, f"{fm}={branch}.100.01-1")
    assert has(cmds, f"installed driver {branch}.100.01")
    nccl = "2.27.7-1+cuda12.9" if branch == "570" else NCCL
    assert has(cmds, f"libnccl2={nccl}")


def test_a_host_from_ubuntus_archive_names_moves_to_nvidias():
    w = converged()
    del w.packages["nvidia-open-580"]
    w.packages["nvidia-driver-580-open"] = (DRIVER, True)
    assert has(run(w), f"nvidia-open-580={DRIVER} nvidia-driver-580-open-")


def test_simulation_overrides_only_with_the_lab_flag():
    seen = []
    w = world()
    w.facts[facts.LoadedDriver] = lambda simulated=False: seen.append(simulated) or gpu.LoadedDriver(None)
    run(w)
    run(w, gpu_simulation=True)
    assert set(seen) == {False, True} and seen[0] is False
    assert gpu.SIM_SWITCH in gpu.probe("proc_version", simulated=True)
    assert gpu.SIM_DIR not in gpu.probe("proc_version") and gpu.SIM_DIR not in gpu.probe("nvswitch")


def test_issue21_item12_pciutils_is_installed_and_an_unknown_switch_count_is_refused():
    assert has(run(world()), "pciutils")  # lspci: the gate's NVSwitch probe
    with pytest.raises(DeployError, match="cannot tell whether this host has NVSwitches"):
        run(world(nvswitches=None))
    assert not has(run(world(nvswitches=None), gpu_fabric_manager="no"), "fabricmanager")
