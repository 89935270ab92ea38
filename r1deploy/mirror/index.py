"""Hashes and per-commit indexes: what the mirror lists, computed once at publish time."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1deploy.guard import Refused, within

HEX40 = re.compile(r"^[0-9a-f]{40}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Files the Hub stores in LFS by default (.gitattributes of a new repo), or any large file.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".h5", ".msgpack",
                ".model", ".npy", ".npz", ".zst", ".gz", ".tar")
LFS_MIN_SIZE = 10 * 1024 * 1024
CHUNK = 1024 * 1024
PULL_MANIFEST = ".r1deploy-manifest.json"  # written by r1deploy.weights next to the files it verified
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hash_file(path: str | os.PathLike[str]) -> tuple[str, str, int]:
    """sha256 and git blob sha1 of a file, in one read."""
    size = os.path.getsize(path)
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha256.update(chunk)
            sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest(), size


def is_lfs(path: str, size: int) -> bool:
    return path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE


@dataclass(frozen=True)
class Entry:
    """One file of a commit, as the Hub describes it."""

    path: str
    size: int
    sha256: str
    sha1: str
    lfs: bool

    @property
    def pointer(self) -> str:
        return LFS_POINTER.format(sha256=self.sha256, size=self.size)

    @property
    def oid(self) -> str:
        """Tree oid: the git blob id of the file, or of its LFS pointer."""
        return git_blob_sha1(self.pointer.encode()) if self.lfs else self.sha1

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.sha1

    def tree_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "oid": self.oid, "size": self.size, "path": self.path}
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(self.pointer)}
        return out


def scan_files(src: Path) -> list[str]:
    """Relative paths of regular files under src, skipping VCS and tool caches (hidden dirs).

    Symlinks are not published; one that leads out of src refuses the whole tree (Refused), since
    its target was likely meant to be served and must not be, from here.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames) + dirnames:
            full = Path(dirpath, name)
            if full.is_symlink() and not within(src, full):
                raise Refused(f"{full} is a symlink to {os.path.realpath(full)}, outside {src}; "
                              "refusing to publish it")
            if name in filenames and full.is_file() and not full.is_symlink():
                found.append(full.relative_to(src).as_posix())
    return sorted(found)


def build_index(commit_dir: Path) -> list[Entry]:
    entries = []
    for rel in scan_files(commit_dir):
        sha256, sha1, size = hash_file(commit_dir / rel)
        entries.append(Entry(rel, size, sha256, sha1, is_lfs(rel, size)))
    return entries


def commit_id(entries: list[Entry]) -> str:
    """Deterministic commit id from the listing and content hashes (same files -> same id)."""
    h = hashlib.sha1(b"r1deploy-mirror-commit-v1\n")
    for e in sorted(entries, key=lambda e: e.path):
        h.update(f"{e.path}\0{e.size}\0{e.sha256}\n".encode())
    return h.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, 0o644)  # the server may run as a less privileged user than the publisher
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _index_path(repo_dir: Path, commit: str) -> Path:
    return repo_dir / "index" / f"{commit}.json"


def write_index(repo_dir: Path, commit: str, entries: list[Entry]) -> None:
    write_json_atomic(_index_path(repo_dir, commit), {
        "commit": commit,
        "files": [e.__dict__ for e in entries],
    })


def read_index(repo_dir: Path, commit: str) -> list[Entry] | None:
    try:
        data = json.loads(_index_path(repo_dir, commit).read_text())
    except FileNotFoundError:
        return None
    return [Entry(**f) for f in data["files"]]
