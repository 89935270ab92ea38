"""The gpu_host role for real, through pyinfra's CLI, on a Debian 12 chroot that installs
from the lab's SIMULATED NVIDIA repository (lab/gpu_repo.py): repo and key, pins, holds,
fabric manager following the driver, the reboot decision, skew, and the gate.

A chroot cannot reboot or run services, so the role runs with gpu_allow_reboot=False (it
must stop with "reboot required"), a "boot" is the stub's boot script, and the services the
role would start are the only changes left. Needs root and the lab's cached Debian rootfs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from lab import gpu_repo  # noqa: E402
from r1deploy.gpu import dpkg  # noqa: E402

ROOTFS = Path(os.environ.get("R1LAB_CACHE", "/var/cache/r1deploy-lab")) / "rootfs"
PYINFRA = Path(sys.executable).with_name("pyinfra")
MODEL = ["--data", "model_repo_id=deepseek-ai/DeepSeek-R1", "--data", f"model_revision={'a' * 40}"]

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 or not (ROOTFS / "usr/bin/apt-get").exists() or not shutil.which("chroot"),
                       reason="needs root and the lab's cached Debian rootfs"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Chroot:
    def __init__(self, root: Path, base_url: str):
        self.root, self.base_url = root, base_url
        self.deploy = root.parent / "gpu_deploy.py"
        self.deploy.write_text("from r1deploy.roles.gpu_host import gpu_host\n\ngpu_host()\n")

    def pyinfra(self, deploy: str, *data: str, dry: bool = False) -> subprocess.CompletedProcess:
        # -y would skip the change detection a dry run is for
        args = [str(PYINFRA), *([] if dry else ["-y"]), f"@chroot{self.root}", deploy, *MODEL,
                "--data", f"gpu_cuda_repo_url={self.base_url}", "--data", "gpu_allow_reboot=False",
                "--data", "gpu_vendor=nvidia", "--data", "gpu_simulation=True"]
        for item in data:
            args += ["--data", item]
        if dry:
            args.append("--dry")
        done = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        done.output = done.stdout + done.stderr
        return done

    def role(self, *data: str, dry: bool = False) -> subprocess.CompletedProcess:
        return self.pyinfra(str(self.deploy), *data, dry=dry)

    def sh(self, command: str) -> str:
        return subprocess.run(["chroot", str(self.root), "sh", "-c", command], capture_output=True, text=True,
                              check=True).stdout

    def packages(self) -> dict[str, tuple[str, bool]]:
        return dpkg.parse_dpkg_packages(self.sh("dpkg-query -W -f='${db:Status-Abbrev}|${Package}|${Version}\\n'"))

    def boot(self) -> None:
        self.sh("/usr/lib/r1deploy-gpu-sim/boot")


def changed(output: str) -> list[str]:
    """Operation names pyinfra's dry run lists with a change."""
    return [line.split("|", 1)[1].split("  ")[0].strip() for line in output.splitlines()
            if line.strip().startswith("GPU host |") and " 1 (@chroot" in line]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("gpu-chroot")
    root = base / "root"
    subprocess.run(["cp", "-a", str(ROOTFS), str(root)], check=True)
    # only the simulated repository: no Debian mirror, no lab proxy in this chroot
    for p in ("etc/apt/sources.list.d/debian.sources", "etc/apt/apt.conf.d/80r1lab-proxy", "etc/apt/sources.list"):
        (root / p).unlink(missing_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gpu_repo.build_repo(base / "repo", url, distros=("debian12",))
    gpu_repo.sim_hardware("h200x1-ubuntu2404", root)  # also the lab's half of the simulation switch
    server = gpu_repo.serve(base / "repo", "127.0.0.1", port)
    yield Chroot(root, url), base
    server.shutdown()
    shutil.rmtree(root, ignore_errors=True)


def test_fresh_install_stops_for_the_reboot_it_may_not_do(lab):
    chroot, _ = lab
    run = chroot.role()
    assert run.returncode != 0
    assert ("reboot required (running kernel module none, installed driver 580.159.04); "
            "gpu_allow_reboot is False") in run.output
    pkgs = chroot.packages()
    assert pkgs["nvidia-open-580"] == ("580.159.04-0ubuntu1", True)
    assert pkgs["libnccl2"] == ("2.28.3-1+cuda13.0", True) and pkgs["libnccl-dev"][1]
    assert "nvidia-fabricmanager-580" not in pkgs  # no NVSwitch declared
    assert "Pin: version 580.159.04-0ubuntu1" in (chroot.root / "etc/apt/preferences.d/r1deploy-nvidia-driver").read_text()
    assert "nvidia-smi has failed" in chroot.sh("nvidia-smi || true").lower()


def test_after_boot_only_the_services_are_left_and_the_gate_passes(lab):
    chroot, _ = lab
    chroot.boot()
    dry = chroot.role(dry=True)
    assert changed(dry.output) == ["nvidia-persistenced as root with persistence mode", "nvidia-persistenced running"]
    gate = chroot.pyinfra("roles/gpu_host/verify.py", "gpu_expected_model=NVIDIA H200", "gpu_expected_count=1")
    assert gate.returncode == 0 and "PASS" in gate.output


def test_a_missing_gpu_fails_the_gate(lab):
    chroot, _ = lab
    gpu_repo.sim_hardware("hgx8-nvswitch-gpu-missing-handmade", chroot.root, nvswitch="")
    gate = chroot.pyinfra("roles/gpu_host/verify.py", "gpu_expected_count=8")
    assert gate.returncode != 0 and "7 GPU(s), expected 8" in gate.output
    gpu_repo.sim_hardware("h200x1-ubuntu2404", chroot.root)


def test_nvswitch_brings_fabric_manager_at_the_driver_version_and_a_change_needs_a_reboot(lab):
    chroot, _ = lab
    gpu_repo.sim_hardware("hgx8-nvswitch-ubuntu2204-handmade", chroot.root)
    run = chroot.role("gpu_driver_version=580.126.09")
    assert "reboot required (running kernel module 580.159.04, installed driver 580.126.09)" in run.output
    pkgs = chroot.packages()
    assert pkgs["nvidia-open-580"] == ("580.126.09-0ubuntu1", True)
    assert pkgs["nvidia-fabricmanager-580"] == ("580.126.09-1", True)
    assert "Driver/library version mismatch" in chroot.sh("nvidia-smi -q || true")


def test_fabric_manager_skew_stops_before_the_driver_moves(lab):
    chroot, base = lab
    # the repository loses fabric manager 580.159.04 (NVIDIA publishes late, or a mirror lags)
    gpu_repo.build_repo(base / "repo", chroot.base_url, distros=("debian12",),
                        contents=gpu_repo.Contents(fabricmanager=("570.195.03", "580.126.09")))
    chroot.sh("apt-get update -q >/dev/null")
    run = chroot.role("gpu_driver_version=580.159.04")
    assert run.returncode != 0
    assert ("nvidia-fabricmanager-580 must equal the driver version 580.159.04 exactly, "
            "but the repository offers 580.126.09-1") in run.output
    assert chroot.packages()["nvidia-open-580"][0] == "580.126.09-0ubuntu1"
