"""The lab's SIMULATED AMD repositories (lab/rocm_repo.py): AMD's layout and signed suites that
real apt reads through the role's own repository lines, versions the role's pins pick, and an
amd-smi that replays the AMD fixtures only once the simulated amdgpu is "loaded"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(Path(__file__).parent)]

from r1deploy.roles.gpu_host.amd import driver_want  # noqa: E402
from r1deploy.roles.gpu_host.rocm_platforms import ROCM_PLATFORMS  # noqa: E402
from r1deploy.roles.gpu_host.versions import Want  # noqa: E402
from test_gpu_repo import Apt, pytestmark  # noqa: E402, F401  (same tools needed)

from lab import rocm_repo  # noqa: E402
from r1deploy.gpu import amd  # noqa: E402


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return rocm_repo.build_repo(tmp_path_factory.mktemp("rocm") / "radeon",
                                rocm_repo.RocmContents(kernel_release="6.8.0-88-generic"))


def role_lines(repo: Path, release: str) -> str:
    """The role's own repository lines, pointed at file:// and at the lab key."""
    lines = ROCM_PLATFORMS[("ubuntu", "24.04")].sources(f"file://{repo}", release, None)
    return lines.replace("signed-by=/etc/apt/keyrings/rocm.asc", f"signed-by={repo}.keyring.asc")


def test_layout_and_key_are_amds(repo):
    assert (repo / "rocm" / "rocm.gpg.key").read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    for suite in ("amdgpu/6.4.1/ubuntu/dists/noble", "rocm/apt/6.4.1/dists/noble"):
        release = (repo / suite / "Release").read_text()
        assert "Origin: repo.radeon.com" in release and "SIMULATION" in release
        assert {"InRelease", "Release.gpg"} <= {p.name for p in (repo / suite).iterdir()}


@pytest.mark.parametrize("release", ["6.3.3", "6.4.1"])
def test_real_apt_finds_what_the_role_pins(repo, tmp_path, release):
    # armored, as the role keeps it (apt reads .asc keys as they are)
    Path(f"{repo}.keyring.asc").write_bytes((repo / "rocm" / "rocm.gpg.key").read_bytes())
    apt = Apt(tmp_path, role_lines(repo, release))
    apt("apt-get", "update")
    out = apt("apt-cache", "madison", "amdgpu-dkms", "amd-smi-lib", "rocm-smi-lib")
    offered = {}
    for line in out.splitlines():
        name, version = (c.strip() for c in line.split("|")[:2])
        offered.setdefault(name, []).append(version)
    g = type("G", (), {"rocm_version": release, "amdgpu_version": None})()
    picked = driver_want(g).pick(offered["amdgpu-dkms"], None)
    assert amd.dkms_module_version(picked) == rocm_repo.MODULES[release]
    assert Want("amd-smi-lib", pattern=rf"\.{amd.rocm_code(release)}-").pick(offered["amd-smi-lib"], None)


def test_amd_smi_replays_only_after_the_simulated_module_loads(tmp_path):
    script = tmp_path / "amd-smi"
    sim = tmp_path / "sim"
    sim.mkdir()
    script.write_text(rocm_repo.AMD_SMI.replace("@SIM_DIR@", str(sim)).replace(
        "@SIM_SHARE@/recordings", str(rocm_repo.AMD_RECORDINGS)))
    script.chmod(0o755)
    failed = subprocess.run([str(script), "static", "--json"], capture_output=True, text=True)
    assert amd.parse_static(failed.stdout).status == "smi-failed"
    (sim / "amdgpu-version").write_text("6.12.12\n")
    (sim / "amd-host").write_text("mi300x8-gpu-missing-handmade\n")
    ok = subprocess.run([str(script), "static", "--json"], capture_output=True, text=True)
    assert len(amd.parse_static(ok.stdout).gpus) == 7
