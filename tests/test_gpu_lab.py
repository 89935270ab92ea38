"""SIMULATION: the gpu_host role's real apt flow on lab hosts over SSH, against the lab's
SIMULATED NVIDIA CUDA repository (lab/gpu_repo.py: stub packages, an nvidia-smi that replays
outputs recorded on real GPUs). No NVIDIA software and no GPU are involved anywhere.

Two Debian 12 lab hosts (systemd-nspawn, real systemd and sshd) get `pyinfra … deploy/gpu_hosts.py`
(preflight + gpu_host) with gpu_cuda_repo_url pointing at the simulated repository, served on
the lab bridge by `lab/gpu_repo.py serve` for the length of this module:
    node1  "1× H200 PCIe" (the h200x1-ubuntu2404 recording), driver branch 570, then 580
    node2  "8× H200 HGX with 4 NVSwitches" (hgx8-nvswitch-ubuntu2204-handmade), driver 580.126.09
The role installs cuda-keyring from the repository (the lab's signing key inside, as NVIDIA's
carries theirs), pins and holds, reboots the hosts for real and runs the gate after they return.

This lab is its own (R1GPU_LAB_NAME, default r1gpu, on R1GPU_LAB_NET, default 10.78.0), so it
never touches the serving lab (r1lab) of test_lab_e2e; it is torn down at the end, also on failure.
Run alone: `.venv/bin/pytest -s tests/test_gpu_lab.py` (root; a few minutes; -s shows timings).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lab import gpu_repo, rocm_repo  # noqa: E402
from r1deploy.gpu import dpkg  # noqa: E402
from r1deploy.gpu import nvidia as gpu  # noqa: E402

PY = sys.executable
PYINFRA = Path(PY).with_name("pyinfra")
LAB_ENV = {"R1LAB_NAME": os.environ.get("R1GPU_LAB_NAME", "r1gpu"),
           "R1LAB_NET": os.environ.get("R1GPU_LAB_NET", "10.78.0")}

# What the SIMULATED repository publishes: first two driver releases with their fabric
# managers; later 580.159.04 appears while its fabric manager does not (NVIDIA publishes it
# late, or a mirror lags): the version skew the role must catch.
FIRST = gpu_repo.Contents(drivers=("570.195.03", "580.126.09"))
SKEWED = gpu_repo.Contents(drivers=("570.195.03", "580.126.09", "580.159.04"),
                           fabricmanager=("570.195.03", "580.126.09"))

HARDWARE = {"node1": "h200x1-ubuntu2404", "node2": "hgx8-nvswitch-ubuntu2204-handmade"}
# node3: "8x MI300X" (the hand-made AMD fixture), on the SIMULATED AMD repositories. AMD's
# repositories are Ubuntu-only and the lab's rootfs is Debian 12: the lab host's os-release
# claims Ubuntu 24.04 (part of the simulated world, like its GPUs); apt sees only the stubs.
AMD_NODE = "node3"
AMD_HARDWARE = "mi300x8-ubuntu2404-handmade"
NODE3 = {"gpu_vendor": "amd", "vllm_device": "rocm", "gpu_expected_model": "MI300X", "gpu_expected_count": 8,
         "gpu_rocm_version": "6.3.3"}
UBUNTU_2404 = ('PRETTY_NAME="Ubuntu 24.04.3 LTS (SIMULATED by the r1deploy lab on Debian 12)"\nNAME="Ubuntu"\n'
               'VERSION_ID="24.04"\nVERSION="24.04.3 LTS (Noble Numbat)"\nVERSION_CODENAME=noble\nID=ubuntu\n'
               'ID_LIKE=debian\nUBUNTU_CODENAME=noble\n')
# Spec keys shared by both hosts. deploy/gpu_hosts.py has no weights stage: the model keys only
# satisfy the spec (preflight plans this small catalog model on the GPUs nvidia-smi reports).
COMMON = {
    "fleet_env": "lab",
    "model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    "model_revision": "0" * 40,
    "model_disk_margin_gib": 1,
    "gpu_expected_model": "NVIDIA H200",
    "gpu_reboot_batch_size": 2,
    # LAB ONLY: the probes may read the simulation's files (the hosts also carry gpu.SIM_SWITCH,
    # written by gpu_repo.sim_hardware); no PCI GPUs in a container, so the vendor is named.
    "gpu_simulation": True,
    "gpu_vendor": "nvidia",
}
NODE1 = {"gpu_driver_branch": "570", "gpu_expected_count": 1}
NODE2 = {"gpu_driver_version": "580.126.09", "gpu_expected_count": 8}

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 or not all(shutil.which(t) for t in ("systemd-nspawn", "dpkg-deb", "gpg")),
                       reason="needs root, systemd-nspawn, dpkg-deb and gpg (the lab's SIMULATED GPU hosts)"),
]

TIMINGS: dict[str, float] = {}


def log(msg: str) -> None:
    print(f"[gpu-lab SIMULATION] {msg}", flush=True)


def run_lab(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "lab", *args], cwd=REPO, env={**os.environ, **LAB_ENV},
                          capture_output=True, text=True, timeout=timeout)


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def wait_port(address: str, port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the SIMULATED repository did not come up on {address}:{port}")


def grand_total(output: str) -> dict[str, str]:
    """pyinfra's Results 'Grand total' row: Hosts, Success (= changed), Error, No Change."""
    row = next(line for line in output.splitlines() if "Grand total" in line)
    return dict(zip(("hosts", "success", "error", "no_change"), row.split()[2:], strict=True))


def rebooted(output: str, operation: str) -> int:
    """Hosts the reboot operation changed, over its batches ("<operation>, batch i/n": issue 21
    item 1 reboots a model's replicas a batch at a time, each batch its own operation)."""
    rows = [line.split()[-4:] for line in output.splitlines() if line.strip().startswith(f"GPU host | {operation}")]
    assert rows, f"no '{operation}' in the results"
    return sum(int(success) for _, success, _, _ in rows if success != "-")


@dataclass
class Lab:
    info: dict
    base: Path
    url: str
    nodes: dict[str, str]  # name -> ip
    published: gpu_repo.Contents | None = None
    amd_ip: str | None = None
    data: dict[str, dict] = field(default_factory=lambda: {"node1": dict(NODE1), "node2": dict(NODE2),
                                                           AMD_NODE: dict(NODE3)})

    @property
    def repo_root(self) -> Path:
        return self.base / "repo"

    def publish(self, contents: gpu_repo.Contents) -> None:
        if contents != self.published:
            gpu_repo.build_repo(self.repo_root, self.url, distros=("debian12",), contents=contents)
            self.published = contents

    def ssh(self, name: str, command: str, stdin: bytes | None = None, check: bool = True) -> str:
        done = subprocess.run(
            ["ssh", "-i", self.info["ssh_key"], "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
             "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={self.info['known_hosts']}",
             f"root@{self.amd_ip if name == AMD_NODE else self.nodes[name]}", command],
            input=stdin, capture_output=True, timeout=60, check=False)
        if check:
            assert done.returncode == 0, f"{name}: {command}: {done.stdout!r} {done.stderr!r}"
        return done.stdout.decode()

    def set_hardware(self, name: str, recording: str) -> None:
        """gpu_repo.sim_hardware, written on the lab host: which recording its nvidia-smi replays."""
        with tempfile.TemporaryDirectory() as tmp:
            gpu_repo.sim_hardware(recording, Path(tmp))
            self._copy_sim(name, tmp)

    def set_amd_hardware(self, recording: str, kernel_log: str | None = None) -> None:
        """rocm_repo.sim_hardware on the AMD lab host: the recording its amd-smi replays."""
        with tempfile.TemporaryDirectory() as tmp:
            rocm_repo.sim_hardware(recording, Path(tmp), kernel_log=kernel_log)
            self._copy_sim(AMD_NODE, tmp)

    def set_kernel_log(self, name: str, text: str) -> None:
        """The SIMULATED kernel's messages on a lab host (read only with the simulation switch)."""
        self.ssh(name, f"cat > {gpu.SIM_KERNEL_LOG}", stdin=text.encode())

    def _copy_sim(self, name: str, tmp: str) -> None:
        # the simulation's files and the lab's half of the switch (gpu.SIM_SWITCH)
        tar = subprocess.run(["tar", "-C", tmp, "-cf", "-", gpu.SIM_DIR.lstrip("/"), gpu.SIM_SWITCH.lstrip("/")],
                             capture_output=True, check=True).stdout
        self.ssh(name, "tar -C / --no-same-owner -xf -", stdin=tar)

    def boot_id(self, name: str) -> str:
        return self.ssh(name, "cat /proc/sys/kernel/random/boot_id").strip()

    def packages(self, name: str) -> dict[str, tuple[str, bool]]:
        return dpkg.parse_dpkg_packages(self.ssh(
            name, "dpkg-query -W -f='${db:Status-Abbrev}|${Package}|${Version}\\n' 'nvidia-*' 'libnccl*' || true"))

    def smi(self, name: str) -> gpu.GpuInventory:
        """What the (SIMULATED, replaying) nvidia-smi on the host says now."""
        return gpu.parse_query_gpu(self.ssh(name, gpu.QUERY_GPU + " 2>&1 || true"))

    def inventory(self, amd: bool = False) -> Path:
        path = self.base / "gpu_sim.py"  # pyinfra makes it the group "gpu_sim"
        ssh = {"ssh_user": "root", "ssh_key": self.info["ssh_key"],
               "ssh_known_hosts_file": self.info["known_hosts"], "ssh_strict_host_key_checking": "accept-new"}
        targets = {AMD_NODE: self.amd_ip} if amd else self.nodes
        repos = {"gpu_cuda_repo_url": self.url, "gpu_rocm_repo_url": f"{self.url}/radeon"}
        hosts = [(name, {"ssh_hostname": ip, **ssh, **COMMON, **repos, **self.data[name]})
                 for name, ip in targets.items()]
        path.write_text("# SIMULATED GPU hosts of tests/test_gpu_lab.py (lab hosts, stub NVIDIA packages)\n"
                        f"gpu_sim = {hosts!r}\n")
        return path

    def drift(self, reports: Path) -> subprocess.CompletedProcess:
        """The GPU drift check over these hosts (its table on stdout, exit 0/1/2)."""
        return self.deploy(str(reports), cmd=[str(PYINFRA.with_name("r1deploy")), "drift-run", str(self.inventory()),
                                              "--only", "gpu", "--reports"])

    def deploy(self, *args: str, timeout: int = 420, amd: bool = False,
               cmd: list[str] | None = None) -> subprocess.CompletedProcess:
        cmd = [*(cmd or [str(PYINFRA), "-y", str(self.inventory(amd)), "deploy/gpu_hosts.py"]), *args]
        started = time.monotonic()
        done = subprocess.run(cmd, cwd=REPO, env={**os.environ, **LAB_ENV}, capture_output=True, text=True,
                              timeout=timeout)
        done.output = done.stdout + done.stderr
        done.seconds = time.monotonic() - started
        summary = next((ln.strip() for ln in done.output.splitlines() if "Grand total" in ln), "no Results")
        log(f"pyinfra {' '.join(args)} rc={done.returncode} in {done.seconds:.0f}s; {summary}")
        (self.base / f"pyinfra-{len(list(self.base.glob('pyinfra-*.log')))}.log").write_text(done.output)
        return done


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}: tearing the GPU lab down")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if LAB_ENV["R1LAB_NAME"] == "r1lab" or LAB_ENV["R1LAB_NET"] == "10.77.0":
        pytest.skip("the GPU lab is torn down and rebuilt: never on the serving lab r1lab (10.77.0)")
    # One run per lab at a time: a second pytest (a full suite started beside this one) would
    # tear these hosts down under the first.
    lock = open(f"/run/lock/r1deploy-lab-{LAB_ENV['R1LAB_NAME']}.lock", "w")  # noqa: SIM115 - held to the end
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        pytest.skip(f"lab {LAB_ENV['R1LAB_NAME']} is in use by another test run")
    base = tmp_path_factory.mktemp("gpu-lab")
    server = None
    # `timeout` (or anyone) sending SIGTERM still gets the lab torn down, below.
    on_term = signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        run_lab("down", timeout=300)  # fresh hosts: nothing left of an earlier run of this lab
        up = run_lab("up", "--nodes", "3", "--hosts-only")
        assert up.returncode == 0, up.stderr[-3000:]
        info = json.loads(up.stdout)
        bridge = info["bridge_ip"]
        port = free_port(bridge)
        all_nodes = {h["name"]: h["ip"] for h in info["hosts"] if h["role"] == "node"}
        nodes = {n: ip for n, ip in all_nodes.items() if n in HARDWARE}
        it = Lab(info, base, f"http://{bridge}:{port}", nodes, amd_ip=all_nodes[AMD_NODE])
        it.publish(FIRST)
        rocm_repo.build_repo(it.repo_root / "radeon", rocm_repo.RocmContents(), key_dir=base / "radeon.gnupg")
        server_log = open(base / "gpu-repo.log", "wb")  # noqa: SIM115 - closed with the server
        server = subprocess.Popen([PY, str(REPO / "lab" / "gpu_repo.py"), "serve", str(it.repo_root),
                                   "--host", bridge, "--port", str(port)],
                                  stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(bridge, port)
        for name in nodes:
            it.set_hardware(name, HARDWARE[name])
            it.ssh(name, f"cat > {gpu_repo.SIM_PREFERENCES}", stdin=gpu_repo.sim_apt_preferences(bridge).encode())
        it.set_amd_hardware(AMD_HARDWARE)
        it.ssh(AMD_NODE, "cat > /etc/os-release", stdin=UBUNTU_2404.encode())
        TIMINGS["lab up + repository"] = time.monotonic() - started
        log(f"lab {LAB_ENV['R1LAB_NAME']} up, SIMULATED NVIDIA repository at {it.url}")
        yield it
    finally:
        if server:
            server.terminate()
            server.wait(timeout=10)
            server_log.close()
        down_started = time.monotonic()
        down = run_lab("down", timeout=300)
        TIMINGS["lab down"] = time.monotonic() - down_started
        log("timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in TIMINGS.items())
            + f"; total {time.monotonic() - started:.0f}s")
        lock.close()
        signal.signal(signal.SIGTERM, on_term)
        assert down.returncode == 0, down.stderr[-3000:]


def test_fresh_install_reboots_into_the_driver_and_the_gate_passes(lab):
    assert "SIMULATION" in lab.ssh("node1", "cat /var/lib/r1deploy-gpu-sim/host; "
                                   "curl -s " + lab.url + "/SIMULATION.txt")
    before = {n: lab.boot_id(n) for n in lab.nodes}
    run = lab.deploy()
    TIMINGS["fresh install"] = run.seconds
    assert run.returncode == 0, run.output[-6000:]
    assert rebooted(run.output, "Reboot into the installed driver if needed") == 2
    for name in lab.nodes:
        assert lab.boot_id(name) != before[name], f"{name} did not reboot"
        assert f"{name}: PASS" in run.output
    # the key came the way the role expects it: cuda-keyring from the repository
    assert lab.ssh("node1", "dpkg-query -W -f='${Version}' cuda-keyring") == "1.1-1"
    one, two = lab.packages("node1"), lab.packages("node2")
    assert one["nvidia-open-570"] == ("570.195.03-0ubuntu1", True)
    assert one["libnccl2"] == ("2.27.7-1+cuda12.9", True)  # NCCL for the CUDA 12 of branch 570
    assert "nvidia-fabricmanager-570" not in one  # PCIe: no fabric manager
    assert two["nvidia-open-580"] == ("580.126.09-0ubuntu1", True)
    assert two["nvidia-fabricmanager-580"] == ("580.126.09-1", True)
    assert lab.ssh("node2", "systemctl is-active nvidia-fabricmanager nvidia-persistenced").split() == ["active"] * 2
    assert "loaded 570.195.03 (open)" in run.output and "nvidia-fabricmanager active (4 NVSwitch(es))" in run.output


def test_rerun_changes_nothing(lab):
    run = lab.deploy()
    TIMINGS["no-change rerun"] = run.seconds
    assert run.returncode == 0, run.output[-6000:]
    assert grand_total(run.output)["success"] == "-", run.output[-4000:]
    assert "node1: PASS" in run.output and "node2: PASS" in run.output


def test_driver_branch_upgrade_reboots_and_the_gate_passes(lab):
    before = lab.boot_id("node1")
    lab.data["node1"] = {**NODE1, "gpu_driver_branch": "580"}
    run = lab.deploy("--limit", "node1")
    TIMINGS["branch upgrade 570 -> 580"] = run.seconds
    assert run.returncode == 0, run.output[-6000:]
    assert lab.boot_id("node1") != before, "node1 did not reboot into the new branch"
    pkgs = lab.packages("node1")
    # a branch without an exact version: the newest 580 in the host's apt lists
    assert pkgs["nvidia-open-580"] == ("580.126.09-0ubuntu1", True)
    assert "nvidia-open-570" not in pkgs
    assert pkgs["libnccl2"] == ("2.28.3-1+cuda13.0", True)
    assert "loaded 580.126.09 (open)" in run.output and "node1: PASS" in run.output
    assert lab.smi("node1").driver_version == "580.126.09"


SKEW = ("nvidia-fabricmanager-580 must equal the driver version 580.159.04 exactly, "
        "but the repository offers 580.126.09-1 and 580.126.09-1 is installed")


def test_fabric_manager_skew_is_caught_and_the_old_driver_stays(lab):
    lab.publish(SKEWED)  # 580.159.04 is out, its fabric manager is not
    before = lab.boot_id("node2")
    lab.data["node2"] = {**NODE2, "gpu_driver_version": "580.159.04"}
    # The host's lists predate 580.159.04: the role refreshes them, then the driver step checks
    # fabric manager before installing anything and stops this host.
    first = lab.deploy("--limit", "node2")
    # Now the lists know: the check before any operation is planned refuses the run.
    second = lab.deploy("--limit", "node2")
    TIMINGS["fabric manager skew (2 runs)"] = first.seconds + second.seconds
    for run in (first, second):
        assert run.returncode != 0
        assert SKEW in run.output, run.output[-6000:]
    # the only host of the run stopped at the driver step: pyinfra ends without a Results table
    assert f"[node2] version skew: {SKEW}" in first.output and "[node2] Error" in first.output
    assert f"node2: {SKEW}" in second.output
    pkgs = lab.packages("node2")
    assert pkgs["nvidia-open-580"] == ("580.126.09-0ubuntu1", True)
    assert pkgs["nvidia-fabricmanager-580"] == ("580.126.09-1", True)
    assert lab.boot_id("node2") == before
    smi = lab.smi("node2")
    assert (smi.status, len(smi.gpus), smi.driver_version) == ("ok", 8, "580.126.09")
    assert lab.ssh("node2", "systemctl is-active nvidia-fabricmanager").strip() == "active"


def test_a_missing_gpu_fails_the_gate_and_the_host(lab):
    lab.data["node2"] = dict(NODE2)  # back on the driver it has: only the hardware is wrong now
    lab.set_hardware("node2", "hgx8-nvswitch-gpu-missing-handmade")
    run = lab.deploy()
    TIMINGS["GPU missing"] = run.seconds
    assert run.returncode != 0
    assert "GPU gate failed, not serving from this host" in run.output, run.output[-6000:]
    assert "7 GPU(s), expected 8" in run.output and "node2: FAIL" in run.output
    assert "node1: PASS" in run.output  # the other host is unaffected and converged
    total = grand_total(run.output)
    assert (total["success"], total["error"]) == ("-", "1"), run.output[-4000:]


def test_drift_names_the_missing_gpu_and_is_clean_once_it_is_back(lab, tmp_path):
    """The scheduled drift check (`drift-run --only gpu`: these hosts serve nothing) on the host
    the gate just failed: the missing GPU is named with exit 1; once the GPU is back (the
    SIMULATED hardware restored, as a swapped board would be), the next check exits 0."""
    seen = lab.drift(tmp_path)
    assert seen.returncode == 1, seen.output[-4000:]
    assert re.search(r"^node2 +gpu:gpu-count +DRIFT +7 GPU\(s\), expected 8", seen.stdout, re.M), seen.stdout
    assert not re.search(r"^node1 +\S+ +(DRIFT|unknown)", seen.stdout, re.M), seen.stdout
    lab.set_hardware("node2", HARDWARE["node2"])
    clean = lab.drift(tmp_path)
    assert clean.returncode == 0 and "no drift" in clean.stdout, clean.output[-4000:]
    TIMINGS["drift check, GPU only"] = clean.seconds


XID_79 = "[ 7733.912051] kernel: NVRM: Xid (PCI:0000:00:06): 79, pid=2214, name=python3, GPU has fallen off the bus.\n"


def test_an_xid_in_the_kernel_log_fails_the_gate(lab):
    lab.set_kernel_log("node1", XID_79)
    try:
        run = lab.deploy("--limit", "node1")
        TIMINGS["XID in the kernel log"] = run.seconds
        assert run.returncode != 0
        assert "Xid 79 pid=2214, name=python3, GPU has fallen off the bus." in run.output, run.output[-6000:]
        assert "node1: FAIL" in run.output
    finally:
        lab.ssh("node1", f"rm -f {gpu.SIM_KERNEL_LOG}")


# --- AMD: the SIMULATED repositories of AMD (lab/rocm_repo.py) on node3 ---------------------


def amd_packages(lab) -> dict[str, tuple[str, bool]]:
    return dpkg.parse_dpkg_packages(lab.ssh(
        AMD_NODE, "dpkg-query -W -f='${db:Status-Abbrev}|${Package}|${Version}\\n' 'amdgpu-*' 'amd-smi-lib' 'rocm-*' || true"))


def test_amd_fresh_install_reboots_into_amdgpu_and_the_gate_passes(lab):
    before = lab.boot_id(AMD_NODE)
    run = lab.deploy(amd=True)
    TIMINGS["AMD fresh install"] = run.seconds
    assert run.returncode == 0, run.output[-6000:]
    assert lab.boot_id(AMD_NODE) != before, "node3 did not reboot"
    pkgs = amd_packages(lab)
    assert pkgs["amdgpu-dkms"] == ("1:6.10.5.60303-2164967.24.04", True)
    assert pkgs["amd-smi-lib"] == ("25.3.0.60303-83~24.04", True)
    assert "render" in lab.ssh(AMD_NODE, "id -nG vllm").split()
    assert "amdgpu 6.10.5 loaded = installed amdgpu-dkms" in run.output and "56 XGMI links up" in run.output
    assert "node3: PASS" in run.output


def test_amd_rerun_changes_nothing(lab):
    run = lab.deploy(amd=True)
    TIMINGS["AMD no-change rerun"] = run.seconds
    assert run.returncode == 0, run.output[-6000:]
    assert grand_total(run.output)["success"] == "-", run.output[-4000:]


def test_amd_rocm_upgrade_reboots_into_the_new_amdgpu(lab):
    before = lab.boot_id(AMD_NODE)
    lab.data[AMD_NODE] = {**NODE3, "gpu_rocm_version": "6.4.1"}
    run = lab.deploy(amd=True)
    TIMINGS["AMD ROCm 6.3.3 -> 6.4.1"] = run.seconds
    assert run.returncode == 0, run.output[-6000:]
    assert lab.boot_id(AMD_NODE) != before
    assert amd_packages(lab)["amdgpu-dkms"] == ("1:6.12.12.60401-2164967.24.04", True)
    assert "amdgpu 6.12.12 loaded = installed amdgpu-dkms" in run.output


def test_amd_missing_gpu_and_a_ras_event_fail_the_gate(lab):
    lab.set_amd_hardware("mi300x8-gpu-missing-handmade")
    run = lab.deploy(amd=True)
    assert run.returncode != 0 and "7 GPU(s), expected 8" in run.output, run.output[-6000:]
    ras = "[ 8123.442301] amdgpu 0000:65:00.0: amdgpu: 2 uncorrectable hardware errors detected in umc block\n"
    lab.set_amd_hardware(AMD_HARDWARE, kernel_log=ras)
    run = lab.deploy(amd=True)
    TIMINGS["AMD missing GPU + RAS (2 runs)"] = run.seconds
    assert run.returncode != 0 and "RAS uncorrectable umc" in run.output, run.output[-6000:]
