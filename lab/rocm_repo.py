"""SIMULATION of AMD's apt repositories (repo.radeon.com layout) for the lab: stub packages,
not AMD software.

Layout, as AMD's (roles/gpu_host/rocm_platforms.py): `<root>/rocm/rocm.gpg.key` (armored key),
`<root>/amdgpu/<release>/ubuntu/dists/<codename>/main/binary-amd64/Packages` (amdgpu-dkms) and
`<root>/rocm/apt/<release>/dists/<codename>/...` (amd-smi-lib, rocm-smi-lib), each with a
signed Release whose Origin is AMD's (the role's rocm-pin-600 pins by it). The stubs:
- amdgpu-dkms ships a boot unit that "loads the module" by writing its version to
  r1deploy.gpu.amd.SIM_AMDGPU_VERSION, so a new driver shows only after a reboot;
- amd-smi-lib ships an `amd-smi` that REPLAYS the AMD fixtures (tests/fixtures/amd-hosts/<host>/,
  chosen by <SIM_DIR>/amd-host) and fails like the real one while no module is loaded;
- the kernel-header/extra-module packages the role asks for, empty.

    python lab/rocm_repo.py build /srv/rocm-repo --codename noble
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from lab.apt_repo import Stub, _gpg, packages_index, release_file, serve, sign, stop_agent, write_index  # noqa: E402
from lab.gpu_repo import build_deb, lab_key  # noqa: E402  (the same lab key and deb labels)
from r1deploy.gpu import amd  # noqa: E402
from r1deploy.gpu import nvidia as gpu  # noqa: E402

AMD_RECORDINGS = REPO_ROOT / "tests" / "fixtures" / "amd-hosts"
SIM_SHARE = "/usr/share/r1deploy-rocm-sim"
SIM_LIB = "/usr/lib/r1deploy-rocm-sim"
LABEL = "SIMULATION (r1deploy lab): stub package, not AMD software"
ORIGIN = "repo.radeon.com"  # AMD's Release Origin, which rocm-pin-600 matches (mirrors keep it)
# ROCm release -> the amdgpu module version its amdgpu-dkms builds
MODULES = {"6.3.3": "6.10.5", "6.4.1": "6.12.12"}


@dataclass(frozen=True)
class RocmContents:
    releases: tuple[str, ...] = ("6.3.3", "6.4.1")
    codenames: tuple[str, ...] = ("noble",)
    kernel_release: str = field(default_factory=lambda: os.uname().release)


AMD_SMI = r"""#!/bin/sh
# SIMULATION (r1deploy lab): replays amd-smi output (tests/fixtures/amd-hosts). Not AMD software.
SIM="@SIM_DIR@"
REC="@SIM_SHARE@/recordings"
if [ ! -s "$SIM/amdgpu-version" ]; then
  echo "ERROR:root:Unable to detect any GPU devices, check amdgpu version and module status (sudo modprobe amdgpu)"
  exit 1
fi
host=$(cat "$SIM/amd-host" 2>/dev/null || echo mi300x8-ubuntu2404-handmade)
case "$1" in
  static) f=amd-smi-static.json ;; metric) f=amd-smi-metric.json ;; list) f=amd-smi-list.json ;;
  xgmi) f=amd-smi-xgmi.txt ;;
  *) echo "r1deploy simulation: 'amd-smi $*' was not recorded" >&2; exit 2 ;;
esac
[ -f "$REC/$host/$f" ] || { echo "r1deploy simulation: no $f recorded for $host" >&2; exit 2; }
cat "$REC/$host/$f"
"""

BOOT = r"""#!/bin/sh
# SIMULATION (r1deploy lab): "load amdgpu" at boot = publish the installed module version.
mkdir -p "@SIM_DIR@"
cat "@SIM_LIB@/amdgpu-version" > "@SIM_DIR@/amdgpu-version" 2>/dev/null || rm -f "@SIM_DIR@/amdgpu-version"
"""

BOOT_UNIT = """[Unit]
Description=SIMULATION (r1deploy lab): load the simulated amdgpu kernel module

[Service]
Type=oneshot
ExecStart=@SIM_LIB@/boot

[Install]
WantedBy=multi-user.target
"""


def _fill(text: str) -> str:
    for key, value in {"SIM_DIR": amd.SIM_DIR, "SIM_SHARE": SIM_SHARE, "SIM_LIB": SIM_LIB}.items():
        text = text.replace(f"@{key}@", value)
    return text


def _recordings() -> dict[str, tuple[bytes, int]]:
    return {f"{SIM_SHARE}/recordings/{f.parent.name}/{f.name}": (f.read_bytes(), 0o644)
            for f in sorted(AMD_RECORDINGS.glob("*-handmade/*")) if f.is_file()}


def version_of(package: str, release: str, codename: str) -> str:
    """Version shapes as AMD's: the ROCm release code inside ("...60401-...")."""
    code = amd.rocm_code(release)
    suffix = {"noble": "24.04", "jammy": "22.04"}[codename]
    if package == "amdgpu-dkms":
        return f"1:{MODULES[release]}.{code}-2164967.{suffix}"
    upstream = {"amd-smi-lib": "25.5.1" if release >= "6.4" else "25.3.0",
                "rocm-smi-lib": "7.5.0" if release >= "6.4" else "7.4.0"}[package]
    return f"{upstream}.{code}-83~{suffix}"


def driver_stubs(release: str, codename: str) -> list[Stub]:
    return [Stub("amdgpu-dkms", version_of("amdgpu-dkms", release, codename), {
        f"{SIM_LIB}/amdgpu-version": (MODULES[release] + "\n", 0o644),
        f"{SIM_LIB}/boot": (_fill(BOOT), 0o755),
        "/lib/systemd/system/r1deploy-rocm-sim-boot.service": (_fill(BOOT_UNIT), 0o644),
    }, arch="all", postinst="systemctl enable r1deploy-rocm-sim-boot.service >/dev/null 2>&1 || true\n")]


def rocm_stubs(release: str, codename: str, kernel_release: str) -> list[Stub]:
    return [
        Stub("amd-smi-lib", version_of("amd-smi-lib", release, codename),
             {"/usr/bin/amd-smi": (_fill(AMD_SMI), 0o755), **_recordings()}, arch="all"),
        Stub("rocm-smi-lib", version_of("rocm-smi-lib", release, codename),
             {"/usr/bin/rocm-smi": ("#!/bin/sh\necho '{}'\n", 0o755)}, arch="all"),
        Stub(f"linux-headers-{kernel_release}", "0.sim-1", {f"/usr/src/linux-headers-{kernel_release}/SIMULATION": (LABEL + "\n", 0o644)}, arch="all"),
        Stub(f"linux-modules-extra-{kernel_release}", "0.sim-1", {"/usr/share/doc/linux-modules-extra/SIMULATION": (LABEL + "\n", 0o644)}, arch="all"),
    ]


def _suite(directory: Path, codename: str, debs_from: list[Stub], key_dir: Path) -> None:
    """A dists/<codename>/main/binary-amd64 suite with its pool, signed."""
    pool = directory / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    debs = [build_deb(s, pool) for s in debs_from]
    binary = directory / "dists" / codename / "main" / "binary-amd64"
    binary.mkdir(parents=True, exist_ok=True)
    index = packages_index(debs).replace("Filename: ./", "Filename: pool/")
    write_index(binary, index)
    suite = directory / "dists" / codename
    release = release_file(binary, codename)
    release = release.replace("Origin: r1deploy lab SIMULATION", f"Origin: {ORIGIN}\nLabel-Note: {LABEL}")
    release = release.replace(" Packages", " main/binary-amd64/Packages").replace(
        "Label: SIMULATED NVIDIA CUDA repository", "Label: SIMULATED AMD ROCm repository").replace(
        "Architectures: amd64 all", "Architectures: amd64 all\nComponents: main").replace(
        "SIMULATION of NVIDIA's CUDA apt repository", "SIMULATION of AMD's ROCm apt repositories")
    (suite / "Release").write_text(release)
    sign(key_dir, suite / "Release")


def build_repo(root: Path, contents: RocmContents = RocmContents(), key_dir: Path | None = None) -> Path:
    root = Path(root)
    key_dir = key_dir or root.parent / f"{root.name}.gnupg"
    lab_key(key_dir)
    try:
        if root.exists():
            shutil.rmtree(root)
        (root / "rocm").mkdir(parents=True)
        (root / "rocm" / "rocm.gpg.key").write_bytes(_gpg(key_dir, "--armor", "--export").stdout)
        for release in contents.releases:
            for codename in contents.codenames:
                _suite(root / "amdgpu" / release / "ubuntu", codename, driver_stubs(release, codename), key_dir)
                _suite(root / "rocm" / "apt" / release, codename,
                       rocm_stubs(release, codename, contents.kernel_release), key_dir)
        (root / "SIMULATION.txt").write_text(f"{LABEL}\nBuilt by lab/rocm_repo.py for the r1deploy lab.\n")
        return root
    finally:
        stop_agent(key_dir)


def sim_hardware(recording: str, rootfs: Path = Path("/"), kernel_log: str | None = None) -> None:
    """Declare a lab host's SIMULATED AMD GPUs (the recording amd-smi replays), the lab's half
    of the simulation switch, and optionally the simulated kernel's log (an injected RAS/XID)."""
    sim = Path(rootfs) / amd.SIM_DIR.lstrip("/")
    sim.mkdir(parents=True, exist_ok=True)
    (sim / "amd-host").write_text(recording + "\n")
    if kernel_log is not None:
        (sim / Path(gpu.SIM_KERNEL_LOG).name).write_text(kernel_log)
    switch = Path(rootfs) / amd.SIM_SWITCH.lstrip("/")
    switch.parent.mkdir(parents=True, exist_ok=True)
    switch.write_text(f"{LABEL}: probes may read {amd.SIM_DIR} (with gpu_simulation = True)\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("root", type=Path)
    b.add_argument("--codename", action="append", default=None)
    s = sub.add_parser("serve")
    s.add_argument("root", type=Path)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8703)
    args = parser.parse_args(argv)
    if args.cmd == "build":
        build_repo(args.root, RocmContents(codenames=tuple(args.codename or ["noble"])))
        return 0
    import threading

    serve(args.root, args.host, args.port)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
