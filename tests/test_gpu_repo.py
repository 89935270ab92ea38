"""The lab's SIMULATED NVIDIA repository: signed apt metadata that real apt accepts, stub
packages named like the role expects, and a replaying nvidia-smi that sees a new driver only
after a (simulated) reboot."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from r1deploy.roles.gpu_host import facts  # noqa: E402
from r1deploy.roles.gpu_host.platforms import KEYRING_FILE, PLATFORMS  # noqa: E402
from r1deploy.roles.gpu_host.versions import VersionSkew, Want, follow  # noqa: E402

from lab import gpu_repo  # noqa: E402
from r1deploy.gpu import nvidia as gpu  # noqa: E402

pytestmark = pytest.mark.skipif(not (shutil.which("dpkg-deb") and shutil.which("gpg") and shutil.which("apt-get")),
                                reason="needs dpkg-deb, gpg and apt-get (apt-get install dpkg gnupg apt)")
BASE = "http://10.77.0.1:8702"
CONTENTS = gpu_repo.Contents(fabricmanager=("570.195.03", "580.126.09"), kernel_release="6.8.0-88-generic")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> gpu_repo.Repo:
    root = tmp_path_factory.mktemp("gpu-repo") / "repo"
    return gpu_repo.build_repo(root, BASE, distros=("ubuntu2404", "debian12"), contents=CONTENTS)


class Apt:
    """apt-get / apt-cache with every state and config path in a private directory."""

    def __init__(self, base: Path, source_line: str):
        for d in ("lists/partial", "cache/archives/partial", "etc"):
            (base / d).mkdir(parents=True, exist_ok=True)
        (base / "etc/sources.list").write_text(source_line)
        (base / "status").write_text("")
        self.options = []
        for key, value in {
            "Dir::Etc::SourceList": base / "etc/sources.list", "Dir::Etc::SourceParts": base / "none",
            "Dir::Etc::Preferences": base / "none.pref", "Dir::Etc::PreferencesParts": base / "none",
            "Dir::State::Lists": base / "lists", "Dir::Cache": base / "cache", "Dir::State::status": base / "status",
            "Debug::NoLocking": "1", "APT::Sandbox::User": "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"),
        }.items():
            self.options += ["-o", f"{key}={value}"]

    def __call__(self, tool: str, *args: str) -> str:
        done = subprocess.run([tool, *self.options, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def apt(repo, tmp_path_factory) -> Apt:
    line = f"deb [signed-by={repo.keyring}] file://{repo.root}/debian12/x86_64/ /\n"
    apt = Apt(tmp_path_factory.mktemp("apt"), line)
    apt("apt-get", "update")
    return apt


def test_layout_is_nvidias(repo):
    for distro in ("ubuntu2404", "debian12"):
        d = repo.root / distro / "x86_64"
        assert {"Packages", "Packages.gz", "Release", "InRelease", "Release.gpg", "cuda-keyring_1.1-1_all.deb"} <= {
            p.name for p in d.iterdir()}
    assert "SIMULATION" in (repo.root / "SIMULATION.txt").read_text()
    assert repo.url("debian12") == f"{BASE}/debian12/x86_64/" == PLATFORMS[("debian", "12")].repo_url(BASE)


def test_release_is_signed_by_the_lab_key_and_hashes_match(repo):
    d = repo.root / "ubuntu2404" / "x86_64"
    for args in (["InRelease"], ["Release.gpg", "Release"]):
        subprocess.run(["gpgv", "--keyring", str(repo.keyring), *args], cwd=d, check=True, capture_output=True)
    release = (d / "Release").read_text()
    for name in ("Packages", "Packages.gz"):
        data = (d / name).read_bytes()
        assert f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}\n" in release
    assert "Label: SIMULATED NVIDIA CUDA repository" in release


def test_real_apt_reads_the_repo_and_the_fact_parses_it(apt):
    out = apt("apt-cache", "madison", "nvidia-open-580", "nvidia-fabricmanager-580", "libnccl2")
    offered = facts.AptVersions().process(out.splitlines())
    assert offered["nvidia-open-580"] == ["580.159.04-0ubuntu1", "580.126.09-0ubuntu1"]
    assert offered["libnccl2"] == ["2.28.3-1+cuda13.0", "2.27.7-1+cuda12.9"]
    # this build leaves fabric manager 580.159.04 out: the role must refuse the newest driver
    assert offered["nvidia-fabricmanager-580"] == ["580.126.09-1"]
    newest = Want("nvidia-open-580", prefix="580.").pick(offered["nvidia-open-580"], None)
    with pytest.raises(VersionSkew, match="580.159.04 exactly, but the repository offers 580.126.09-1"):
        follow(Want("nvidia-fabricmanager-580"), newest, offered["nvidia-fabricmanager-580"], None)


def test_apt_resolves_the_roles_install_line(apt):
    plan = apt("apt-get", "install", "-s", "-y", "--allow-downgrades",
               "nvidia-open-580=580.159.04-0ubuntu1", "libnccl2=2.28.3-1+cuda13.0",
               "libnccl-dev=2.28.3-1+cuda13.0", "linux-headers-6.8.0-88-generic", "dkms")
    for pkg in ("nvidia-open-580 (580.159.04-0ubuntu1", "libnccl-dev (2.28.3-1+cuda13.0",
                "linux-headers-6.8.0-88-generic (0.sim-1"):
        assert f"Inst {pkg}" in plan


def extract(repo, name: str, root: Path) -> None:
    (deb,) = (repo.root / "debian12" / "x86_64").glob(f"{name}[_-]*.deb")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)


def test_keyring_package_points_apt_at_the_served_repo(repo, tmp_path):
    extract(repo, "cuda-keyring", tmp_path)
    assert (tmp_path / KEYRING_FILE.lstrip("/")).read_bytes() == repo.keyring.read_bytes()
    line = (tmp_path / "etc/apt/sources.list.d/cuda-debian12-x86_64.list").read_text()
    assert line == PLATFORMS[("debian", "12")].sources_line(BASE)  # what the role writes too


def smi(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(root / "usr/bin/nvidia-smi"), *args], capture_output=True, text=True,
                          env={**os.environ, "R1DEPLOY_GPU_SIM_ROOT": str(root)})


def boot(root: Path) -> None:
    subprocess.run([str(root / "usr/lib/r1deploy-gpu-sim/boot")], check=True,
                   env={**os.environ, "R1DEPLOY_GPU_SIM_ROOT": str(root)})


def test_driver_stub_shows_only_after_boot_and_replays_recordings(repo, tmp_path):
    extract(repo, "nvidia-open-580_580.126.09", tmp_path)
    before = smi(tmp_path, f"--query-gpu={gpu.QUERY_GPU_FIELDS}", "--format=csv")
    assert before.returncode == 9 and gpu.parse_query_gpu(before.stdout).status == "smi-failed"

    boot(tmp_path)
    loaded = gpu.parse_proc_version((tmp_path / gpu.SIM_PROC_VERSION.lstrip("/")).read_text())
    assert loaded == gpu.LoadedDriver("580.126.09", True)
    inv = gpu.parse_query_gpu(smi(tmp_path, f"--query-gpu={gpu.QUERY_GPU_FIELDS}", "--format=csv").stdout)
    assert inv.ok and [g.driver_version for g in inv.gpus] == ["580.126.09"]  # h200x1 by default
    assert gpu.parse_topo(smi(tmp_path, "topo", "-m").stdout).gpus == ("GPU0",)

    # the lab makes a GPU go missing on an HGX board
    gpu_repo.sim_hardware("hgx8-nvswitch-gpu-missing-handmade", tmp_path)
    inv = gpu.parse_query_gpu(smi(tmp_path, f"--query-gpu={gpu.QUERY_GPU_FIELDS}", "--format=csv").stdout)
    assert len(inv.gpus) == 7
    sim_switches = (tmp_path / gpu.SIM_NVSWITCH.lstrip("/")).read_text()
    assert gpu.parse_nvswitch_count(sim_switches) == 4

    # a driver upgrade without reboot: user space and module disagree, as on real hosts
    extract(repo, "nvidia-open-580_580.159.04", tmp_path)
    mismatch = smi(tmp_path, "-q")
    assert mismatch.returncode == 18 and "Driver/library version mismatch" in mismatch.stdout
    assert not gpu.parse_query_gpu(mismatch.stdout).ok
    boot(tmp_path)
    health = gpu.parse_smi_q(smi(tmp_path, "-q").stdout)
    assert health.driver_version == "580.159.04" and len(health.gpus) == 7


def test_fabric_manager_stub_refuses_another_driver(repo, tmp_path):
    extract(repo, "nvidia-open-580_580.159.04", tmp_path)
    extract(repo, "nvidia-fabricmanager-580_580.126.09", tmp_path)
    boot(tmp_path)
    fm = tmp_path / "usr/bin/nv-fabricmanager"
    done = subprocess.run([str(fm)], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "R1DEPLOY_GPU_SIM_ROOT": str(tmp_path)})
    assert done.returncode == 1 and "580.126.09 does not match the loaded driver '580.159.04'" in done.stderr


def test_stub_units_and_labels(repo, tmp_path):
    extract(repo, "nvidia-open-580_580.159.04", tmp_path)
    unit = (tmp_path / "lib/systemd/system/r1deploy-gpu-sim-boot.service").read_text()
    assert "SIMULATION" in unit and "WantedBy=multi-user.target" in unit
    info = subprocess.run(["dpkg-deb", "-f", str(next((repo.root / "debian12/x86_64").glob("libnccl2_2.28*"))),
                           "Description"], capture_output=True, text=True, check=True).stdout
    assert info.startswith("SIMULATION")


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="the stand-in asks systemd for its engine")
def test_dcgm_stub_diag_parses(repo, tmp_path):
    extract(repo, "datacenter-gpu-manager-4-cuda13", tmp_path)
    out = subprocess.run(["sh", str(tmp_path / "usr/bin/dcgmi"), "diag", "-r", "1"], capture_output=True, text=True)
    assert gpu.parse_dcgm_diag(out.stdout) == (True, "1 diagnostic(s) passed")


@pytest.mark.parametrize("distro", ["ubuntu2204", "ubuntu2404", "debian12"])
def test_the_simulated_repository_has_every_name_the_role_installs(tmp_path, distro):
    """The repository is built from lab/nvidia_names.py, the role asks by roles/gpu_host/
    nvidia_names.py: apt must find each (branch, flavour) the role can ask for."""
    from r1deploy.roles.gpu_host.nvidia_names import driver_names

    contents = gpu_repo.Contents(drivers=("570.195.03", "580.159.04", "590.44.01"), kernel_release="6.8.0-88-generic")
    repo = gpu_repo.build_repo(tmp_path / "repo", BASE, distros=(distro,), contents=contents)
    apt = Apt(tmp_path / "apt", f"deb [signed-by={repo.keyring}] file://{repo.root}/{distro}/x86_64/ /\n")
    apt("apt-get", "update")
    for branch in ("570", "580", "590"):
        for open_modules in (True, False):
            names = driver_names(distro, branch, open_modules)
            for name in (names.driver, names.fabricmanager):
                assert apt("apt-cache", "madison", name).strip(), f"{distro} {branch}: no {name} in the simulated repo"
