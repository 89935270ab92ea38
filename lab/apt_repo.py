"""Signed apt repositories for the lab's SIMULATED vendor repositories (lab/gpu_repo.py,
lab/rocm_repo.py): stub .deb files, Packages indexes, Release files signed by a lab key, and a
plain HTTP server for them."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Stub:
    name: str
    version: str
    files: dict[str, tuple[str | bytes, int]] = field(default_factory=dict)  # path -> (content, mode)
    arch: str = "amd64"
    control: dict[str, str] = field(default_factory=dict)
    postinst: str | None = None

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version.split(':')[-1]}_{self.arch}.deb"


# --- building debs and the index ------------------------------------------------------


def build_deb(stub: Stub, out_dir: Path, label: str) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "pkg"
        for path, (content, mode) in stub.files.items():
            target = tree / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content if isinstance(content, bytes) else content.encode())
            target.chmod(mode)
        debian = tree / "DEBIAN"
        debian.mkdir(parents=True, exist_ok=True)
        fields = {"Package": stub.name, "Version": stub.version, "Architecture": stub.arch,
                  "Maintainer": "r1deploy lab <gpu-repo@r1deploy.invalid>", "Section": "misc",
                  "Priority": "optional", **stub.control, "Description": f"{label}\n {stub.name} stand-in"}
        (debian / "control").write_text("".join(f"{k}: {v}\n" for k, v in fields.items()))
        if stub.postinst:
            (debian / "postinst").write_text("#!/bin/sh\nset -e\n" + stub.postinst)
            (debian / "postinst").chmod(0o755)
        target = out_dir / stub.filename
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(target)],
                       check=True, capture_output=True)
    return target


def _hashes(data: bytes) -> dict[str, str]:
    return {"MD5sum": hashlib.md5(data).hexdigest(), "SHA1": hashlib.sha1(data).hexdigest(),
            "SHA256": hashlib.sha256(data).hexdigest()}


def packages_index(debs: list[Path]) -> str:
    stanzas = []
    for deb in sorted(debs):
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True).stdout
        data = deb.read_bytes()
        extra = {"Filename": f"./{deb.name}", "Size": str(len(data)), **_hashes(data)}
        stanzas.append(control.rstrip("\n") + "\n" + "".join(f"{k}: {v}\n" for k, v in extra.items()))
    return "\n".join(stanzas)


def release_file(directory: Path, distro: str) -> str:
    files = {name: (directory / name).read_bytes() for name in ("Packages", "Packages.gz")}
    lines = ["Origin: r1deploy lab SIMULATION", "Label: SIMULATED NVIDIA CUDA repository",
             f"Suite: {distro}", f"Codename: {distro}", "Architectures: amd64 all",
             f"Date: {formatdate(usegmt=True)}",
             "Description: SIMULATION of NVIDIA's CUDA apt repository for the r1deploy lab"]
    for title, algo in (("MD5Sum", "md5"), ("SHA1", "sha1"), ("SHA256", "sha256")):
        lines.append(f"{title}:")
        lines += [f" {hashlib.new(algo, data).hexdigest()} {len(data)} {name}" for name, data in files.items()]
    return "\n".join(lines) + "\n"


def write_index(directory: Path, index: str) -> None:
    """Packages and Packages.gz (reproducible: no mtime in the gzip header) in `directory`."""
    (directory / "Packages").write_text(index)
    (directory / "Packages.gz").write_bytes(gzip.compress(index.encode(), mtime=0))


# --- signing ------------------------------------------------------------------------------


def _gpg(home: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--yes", "--pinentry-mode", "loopback",
                           "--passphrase", "", *args], check=True, capture_output=True, **kw)


def lab_key(home: Path, uid: str) -> bytes:
    """The lab signing key (made once in `home`); returns its public key, binary."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not _gpg(home, "--list-secret-keys", "--with-colons").stdout:
        _gpg(home, "--quick-gen-key", uid, "ed25519", "sign", "never")
    return _gpg(home, "--export").stdout


def sign(home: Path, release: Path) -> None:
    _gpg(home, "--clearsign", "-o", str(release.parent / "InRelease"), str(release))
    _gpg(home, "--armor", "--detach-sign", "-o", str(release.parent / "Release.gpg"), str(release))


def stop_agent(home: Path) -> None:
    """End the gpg-agent our signing started for this key directory (and only that one)."""
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False, capture_output=True)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(root: Path, host: str = "0.0.0.0", port: int = 8702) -> ThreadingHTTPServer:
    """Serve `root` over HTTP from a daemon thread; call .shutdown() to stop."""
    server = ThreadingHTTPServer((host, port), partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True, name="gpu-repo").start()
    return server
