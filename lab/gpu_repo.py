"""SIMULATION of NVIDIA's CUDA apt repository for the lab: stub packages, not NVIDIA software.

Builds a signed local apt repository laid out like NVIDIA's (`<root>/<distro>/x86_64/` with
Packages, Release, InRelease, Release.gpg and the .deb files; a flat "deb URL /" repository)
whose packages carry the names and version shapes the gpu_host role installs. They hold no
driver: the "driver" ships an `nvidia-smi` that REPLAYS outputs recorded on real GPUs
(tests/fixtures/gpu-hosts/), and a boot-time unit that "loads the kernel module" by writing
the installed version to gpu.SIM_PROC_VERSION, so a new driver shows only after a reboot.

What a lab host's "hardware" is, is decided by files under gpu.SIM_DIR on that host:
    host          the recording nvidia-smi replays (e.g. hgx8-nvswitch-gpu-missing-handmade)
    nvswitch.txt  NVSwitch PCI devices the probes see (empty: a PCIe host)
`sim_hardware()` writes them; change `host` to make a GPU "go missing".

    python lab/gpu_repo.py build /srv/gpu-repo --base-url http://10.77.0.1:8702
    python lab/gpu_repo.py serve /srv/gpu-repo --port 8702
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from r1deploy.roles.gpu_host.platforms import (  # noqa: E402
    ARCH_DIR,
    BRANCH_CUDA_MAJOR,
    KEYRING_DEB,
    KEYRING_FILE,
    PLATFORMS,
)

from lab import apt_repo  # noqa: E402
from lab.apt_repo import Stub, packages_index, release_file, serve, sign, stop_agent, write_index  # noqa: E402
from lab.nvidia_names import NAMES  # noqa: E402  (the lab's own table, not the role's)
from r1deploy.gpu import dpkg  # noqa: E402
from r1deploy.gpu import nvidia as gpu  # noqa: E402

RECORDINGS = REPO_ROOT / "tests" / "fixtures" / "gpu-hosts"
SIM_SHARE = "/usr/share/r1deploy-gpu-sim"
SIM_LIB = "/usr/lib/r1deploy-gpu-sim"
LABEL = "SIMULATION (r1deploy lab): stub package, not NVIDIA software"
KEY_UID = "r1deploy lab GPU repository SIMULATION <gpu-repo@r1deploy.invalid>"
RECORDED_VERSION = "580.159.04"  # the driver version in the recordings, replaced on replay


@dataclass(frozen=True)
class Contents:
    """What the repository offers; the defaults cover fresh install, branch upgrade and NCCL."""

    drivers: tuple[str, ...] = ("570.195.03", "580.126.09", "580.159.04")
    # Versions fabric manager is published at; leave one out to simulate version skew.
    fabricmanager: tuple[str, ...] | None = None
    nccl: tuple[str, ...] = ("2.27.7-1+cuda12.9", "2.28.3-1+cuda13.0")
    cuda_toolkits: tuple[str, ...] = ("13.0",)
    kernel_release: str = field(default_factory=lambda: os.uname().release)


@dataclass(frozen=True)
class Repo:
    root: Path
    base_url: str
    keyring: Path  # binary public key, the one cuda-keyring installs
    distros: tuple[str, ...]

    def url(self, distro: str) -> str:
        return f"{self.base_url.rstrip('/')}/{distro}/{ARCH_DIR}/"


# --- stub package contents --------------------------------------------------------------

NVIDIA_SMI = r"""#!/bin/sh
# SIMULATION (r1deploy lab): replays nvidia-smi output recorded on real GPUs. Not NVIDIA software.
SIM="${R1DEPLOY_GPU_SIM_ROOT:-}@SIM_DIR@"
REC="${R1DEPLOY_GPU_SIM_ROOT:-}@SIM_SHARE@/recordings"
mine=$(cut -d' ' -f1 "${R1DEPLOY_GPU_SIM_ROOT:-}@SIM_LIB@/driver-version")
loaded=$(sed -n 's/^NVRM version: .*  \([0-9][0-9.]*\)  .*/\1/p' "$SIM/proc-driver-version" 2>/dev/null)
if [ -z "$loaded" ]; then
  echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
  exit 9
fi
if [ "$loaded" != "$mine" ]; then
  echo "Failed to initialize NVML: Driver/library version mismatch"
  echo "NVML library version: $mine"
  exit 18
fi
host=$(cat "$SIM/host" 2>/dev/null || echo h200x1-ubuntu2404)
case "$*" in
  --query-gpu=*) f=query-gpu.csv ;;
  "-q -x") f=nvidia-smi-q.xml ;;
  -q) f=nvidia-smi-q.txt ;;
  "topo -m") f=topo.txt ;;
  "nvlink -s") f=nvlink-s.txt ;;
  "") f=nvidia-smi.txt ;;
  *) echo "r1deploy simulation: 'nvidia-smi $*' was not recorded" >&2; exit 2 ;;
esac
if [ ! -f "$REC/$host/$f" ]; then
  echo "r1deploy simulation: no $f recorded for $host" >&2
  exit 2
fi
sed "s/@RECORDED@/$loaded/g" "$REC/$host/$f"
"""

BOOT = r"""#!/bin/sh
# SIMULATION (r1deploy lab): "load the kernel module" at boot = publish the installed version.
SIM="${R1DEPLOY_GPU_SIM_ROOT:-}@SIM_DIR@"
mkdir -p "$SIM"
set -- $(cat "${R1DEPLOY_GPU_SIM_ROOT:-}@SIM_LIB@/driver-version" 2>/dev/null)
if [ -z "$1" ]; then rm -f "$SIM/proc-driver-version"; exit 0; fi
if [ "$2" = open ]; then kind="NVIDIA UNIX Open Kernel Module for x86_64"; else kind="NVIDIA UNIX x86_64 Kernel Module"; fi
printf 'NVRM version: %s  %s  Release Build  (r1deploy-simulation@lab)  \nGCC version:  simulated\n' "$kind" "$1" > "$SIM/proc-driver-version"
"""

BOOT_UNIT = """[Unit]
Description=SIMULATION (r1deploy lab): load the simulated NVIDIA kernel module
Before=nvidia-persistenced.service nvidia-fabricmanager.service

[Service]
Type=oneshot
ExecStart=@SIM_LIB@/boot

[Install]
WantedBy=multi-user.target
"""

DAEMON = """#!/bin/sh
# SIMULATION (r1deploy lab): a stand-in daemon that only stays up. Not NVIDIA software.
exec sleep infinity
"""

FABRICMANAGER = r"""#!/bin/sh
# SIMULATION (r1deploy lab): like the real one, refuses a driver of another version.
loaded=$(sed -n 's/^NVRM version: .*  \([0-9][0-9.]*\)  .*/\1/p' "${R1DEPLOY_GPU_SIM_ROOT:-}@SIM_DIR@/proc-driver-version" 2>/dev/null)
if [ "$loaded" != "@VERSION@" ]; then
  echo "fabric manager @VERSION@ does not match the loaded driver '${loaded:-none}'" >&2
  exit 1
fi
exec sleep infinity
"""

DCGMI = """#!/bin/sh
# SIMULATION (r1deploy lab): DCGM stand-in; `dcgmi diag -r 1` passes while the host engine runs.
if [ -d /run/systemd/system ] && ! systemctl is-active --quiet nvidia-dcgm; then
  echo "Error: unable to establish a connection to the specified host: localhost"
  exit 1
fi
cat <<'EOF'
Successfully ran diagnostic for group. (SIMULATION)
+---------------------------+------------------------------------------------+
| Diagnostic                | Result                                         |
+===========================+================================================+
|-----  Deployment  --------+------------------------------------------------|
| Software                  | Pass                                           |
+---------------------------+------------------------------------------------+
EOF
"""


def _unit(description: str, exec_start: str, after: str = "r1deploy-gpu-sim-boot.service") -> str:
    return (f"[Unit]\nDescription=SIMULATION (r1deploy lab): {description}\nAfter={after}\n\n"
            f"[Service]\nExecStart={exec_start}\n\n[Install]\nWantedBy=multi-user.target\n")


def _fill(text: str, **extra: str) -> str:
    values = {"SIM_DIR": gpu.SIM_DIR, "SIM_SHARE": SIM_SHARE, "SIM_LIB": SIM_LIB,
              "RECORDED": RECORDED_VERSION.replace(".", r"\."), **extra}
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def build_deb(stub: Stub, out_dir: Path) -> Path:
    return apt_repo.build_deb(stub, out_dir, LABEL)


def lab_key(home: Path) -> bytes:
    """The lab signing key (made once in `home`); returns its public key, binary."""
    return apt_repo.lab_key(home, KEY_UID)


def _recordings(source: Path) -> dict[str, tuple[bytes, int]]:
    return {f"{SIM_SHARE}/recordings/{f.parent.name}/{f.name}": (f.read_bytes(), 0o644)
            for f in sorted(source.glob("*/*")) if f.is_file()}


def _driver(branch_version: str, open_modules: bool, recordings: dict, distro: str) -> Stub:
    branch = branch_version.split(".")[0]
    name = NAMES[(distro, branch, "open" if open_modules else "proprietary")][0]
    return Stub(name, f"{branch_version}-0ubuntu1", {
        "/usr/bin/nvidia-smi": (_fill(NVIDIA_SMI), 0o755),
        "/usr/bin/nvidia-persistenced": (DAEMON, 0o755),
        f"{SIM_LIB}/driver-version": (f"{branch_version} {'open' if open_modules else 'proprietary'}\n", 0o644),
        f"{SIM_LIB}/boot": (_fill(BOOT), 0o755),
        "/lib/systemd/system/r1deploy-gpu-sim-boot.service": (_fill(BOOT_UNIT), 0o644),
        "/lib/systemd/system/nvidia-persistenced.service": (
            _unit("NVIDIA persistence daemon stand-in", "/usr/bin/nvidia-persistenced --user nvidia-persistenced"), 0o644),
        **recordings,
    }, control={"Provides": "r1deploy-sim-nvidia-driver", "Conflicts": "r1deploy-sim-nvidia-driver",
                "Replaces": "r1deploy-sim-nvidia-driver"},
        postinst="systemctl enable r1deploy-gpu-sim-boot.service >/dev/null 2>&1 || true\n")


def _fabricmanager(branch_version: str, distro: str) -> Stub:
    branch = branch_version.split(".")[0]
    return Stub(NAMES[(distro, branch, "open")][1], f"{branch_version}-1", {
        "/usr/bin/nv-fabricmanager": (_fill(FABRICMANAGER, VERSION=branch_version), 0o755),
        "/lib/systemd/system/nvidia-fabricmanager.service": (
            _unit("NVIDIA fabric manager stand-in", "/usr/bin/nv-fabricmanager"), 0o644),
    }, control={"Provides": "r1deploy-sim-fabricmanager", "Conflicts": "r1deploy-sim-fabricmanager",
                "Replaces": "r1deploy-sim-fabricmanager"})


def _nccl(version: str) -> list[Stub]:
    upstream = dpkg.upstream_version(version)
    return [
        Stub("libnccl2", version, {f"/usr/lib/x86_64-linux-gnu/libnccl.so.{upstream}": (LABEL + "\n", 0o644)}),
        Stub("libnccl-dev", version, {"/usr/include/nccl.h": (f"/* {LABEL} */\n", 0o644)},
             control={"Depends": f"libnccl2 (= {version})"}),
    ]


def _toolkit(version: str) -> Stub:
    major, minor = version.split(".")[:2]
    nvcc = (RECORDINGS / "h200x1-ubuntu2404" / "nvcc.txt").read_text()
    return Stub(f"cuda-toolkit-{major}-{minor}", f"{version}.88-1", {
        f"/usr/local/cuda-{major}.{minor}/bin/nvcc": (f"#!/bin/sh\ncat <<'EOF'\n{nvcc}EOF\n", 0o755)})


def _dcgm(cuda_major: str) -> Stub:
    return Stub(f"datacenter-gpu-manager-4-cuda{cuda_major}", "1:4.4.1-1", {
        "/usr/bin/dcgmi": (DCGMI, 0o755), "/usr/bin/nv-hostengine": (DAEMON, 0o755),
        "/lib/systemd/system/nvidia-dcgm.service": (_unit("DCGM host engine stand-in", "/usr/bin/nv-hostengine"), 0o644),
    })


def _keyring(distro: str, url: str, key: bytes) -> Stub:
    return Stub("cuda-keyring", "1.1-1", {
        KEYRING_FILE: (key, 0o644),
        f"/etc/apt/sources.list.d/cuda-{distro}-{ARCH_DIR}.list": (f"deb [signed-by={KEYRING_FILE}] {url} /\n", 0o644),
    }, arch="all")


def _system_stubs(kernel_release: str) -> list[Stub]:
    # The lab's containers run the machine's kernel, for which no distribution ships headers.
    return [Stub(f"linux-headers-{kernel_release}", "0.sim-1", {f"/usr/src/linux-headers-{kernel_release}/SIMULATION": (LABEL + "\n", 0o644)}, arch="all"),
            Stub("dkms", "0.sim-1", {"/usr/share/doc/dkms/SIMULATION": (LABEL + "\n", 0o644)}, arch="all"),
            # For hosts with no Debian mirror (the chroot test): the role installs pciutils for lspci;
            # where Debian's is reachable its higher version wins. Probes read the simulation's listing.
            Stub("pciutils", "0.sim-1", {"/usr/share/doc/pciutils/SIMULATION": (LABEL + "\n", 0o644)}, arch="all")]


def named_stubs(contents: Contents, distro: str, recordings: Path = RECORDINGS) -> list[Stub]:
    """The packages whose names differ per distro and branch (lab/nvidia_names.py)."""
    recorded = _recordings(recordings)
    out: list[Stub] = []
    for version in contents.drivers:
        out += [_driver(version, True, recorded, distro), _driver(version, False, recorded, distro)]
    return out + [_fabricmanager(v, distro)
                  for v in (contents.drivers if contents.fabricmanager is None else contents.fabricmanager)]


def stubs(contents: Contents, recordings: Path = RECORDINGS) -> list[Stub]:
    """Every package of the repository with the same name on every distro (the driver and
    fabric manager come from named_stubs, the keyring is added per distro)."""
    out: list[Stub] = []
    for version in contents.nccl:
        out += _nccl(version)
    out += [_toolkit(v) for v in contents.cuda_toolkits]
    out += [_dcgm(m) for m in sorted(set(BRANCH_CUDA_MAJOR[v.split(".")[0]] for v in contents.drivers))]
    return out + _system_stubs(contents.kernel_release)


# --- the repository ---------------------------------------------------------------------------


def build_repo(root: Path, base_url: str, *, distros: tuple[str, ...] | None = None,
               contents: Contents = Contents(), key_dir: Path | None = None,
               recordings: Path = RECORDINGS) -> Repo:
    """Build (or rebuild) the SIMULATED repository under `root`, to be served at `base_url`.
    The signing key lives in `key_dir` (default: <root>/../<root name>.gnupg), outside `root`."""
    root = Path(root)
    key_dir = key_dir or root.parent / f"{root.name}.gnupg"
    distros = distros or tuple(p.key for p in PLATFORMS.values())
    key = lab_key(key_dir)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shared = [build_deb(s, Path(tmp)) for s in stubs(contents, recordings)]
            repo = Repo(root, base_url, root / "lab-gpu-repo-keyring.gpg", distros)
            root.mkdir(parents=True, exist_ok=True)
            repo.keyring.write_bytes(key)
            for distro in distros:
                directory = root / distro / ARCH_DIR
                if directory.exists():
                    shutil.rmtree(directory)
                directory.mkdir(parents=True)
                debs = [Path(shutil.copy2(d, directory)) for d in shared]
                debs += [build_deb(s, directory) for s in named_stubs(contents, distro, recordings)]
                debs.append(build_deb(_keyring(distro, repo.url(distro), key), directory))
                assert debs[-1].name == KEYRING_DEB, debs[-1].name  # the name the role downloads
                write_index(directory, packages_index(debs))
                (directory / "Release").write_text(release_file(directory, distro))
                sign(key_dir, directory / "Release")
        (root / "SIMULATION.txt").write_text(f"{LABEL}\nBuilt by lab/gpu_repo.py for the r1deploy lab.\n")
        return repo
    finally:
        stop_agent(key_dir)


def sim_hardware(recording: str, rootfs: Path = Path("/"), nvswitch: str | None = None) -> None:
    """Declare a lab host's SIMULATED GPUs: which recording its nvidia-smi replays and which
    NVSwitch devices the probes see (default: the recording's own nvswitch.txt, if any)."""
    sim = Path(rootfs) / gpu.SIM_DIR.lstrip("/")
    sim.mkdir(parents=True, exist_ok=True)
    switch = Path(rootfs) / gpu.SIM_SWITCH.lstrip("/")  # the lab's half of the simulation switch
    switch.parent.mkdir(parents=True, exist_ok=True)
    switch.write_text(f"{LABEL}: probes may read {gpu.SIM_DIR} (with gpu_simulation = True)\n")
    (sim / "host").write_text(recording + "\n")
    recorded = RECORDINGS / recording / "nvswitch.txt"
    text = nvswitch if nvswitch is not None else (recorded.read_text() if recorded.exists() else "")
    (sim / "nvswitch.txt").write_text(text)


SIM_PREFERENCES = "/etc/apt/preferences.d/r1deploy-gpu-sim"


def sim_apt_preferences(repo_host: str) -> str:
    """apt preferences for a SIMULATED GPU host that also sees its distribution's mirror: the
    repository's dkms stub wins over the real one, which would pull a compiler toolchain in
    for nothing (no stub has a module to build). Write it to SIM_PREFERENCES on the host."""
    return (f"# {LABEL}: dkms from the simulated repository at {repo_host}\n"
            f"Package: dkms\nPin: origin {repo_host}\nPin-Priority: 1001\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SIMULATED NVIDIA CUDA apt repository for the lab")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("root", type=Path)
    b.add_argument("--base-url", required=True)
    b.add_argument("--skew", action="store_true", help="publish fabric manager without the newest driver version")
    s = sub.add_parser("serve")
    s.add_argument("root", type=Path)
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, default=8702)
    args = parser.parse_args(argv)
    if args.cmd == "build":
        contents = Contents()
        if args.skew:
            contents = Contents(fabricmanager=contents.drivers[:-1])
        repo = build_repo(args.root, args.base_url, contents=contents)
        print(f"SIMULATED NVIDIA repository: {', '.join(repo.url(d) for d in repo.distros)}")
        return 0
    server = serve(args.root, args.host, args.port)
    print(f"serving SIMULATED NVIDIA repository {args.root} on {args.host}:{args.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
