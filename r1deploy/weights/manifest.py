"""Hashes and the manifest of a pulled directory: verify and status read only this (stdlib)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from r1deploy.weights.errors import WeightsError

MANIFEST = ".r1deploy-manifest.json"
HEX40 = re.compile(r"^[0-9a-f]{40}$")
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class RemoteFile:
    """A file of the pinned commit as the tree listing describes it."""

    path: str
    size: int
    sha256: str | None  # LFS files
    sha1: str  # git blob id (of the LFS pointer for LFS files)

    @property
    def algo(self) -> str:
        return "sha256" if self.sha256 else "sha1"

    @property
    def expected(self) -> str:
        return self.sha256 or self.sha1

    @classmethod
    def from_hub(cls, f: Any) -> RemoteFile:
        """From huggingface-hub's RepoFile."""
        return cls(f.path, f.size, f.lfs.sha256 if f.lfs else None, f.blob_id)


# --------------------------------------------------------------------------- hashing, manifest

def digest(path: Path, algo: str, size: int | None = None) -> str:
    """sha256 of the content, or git's blob sha1 (`blob <size>\\0` + content)."""
    if algo == "sha256":
        h = hashlib.sha256()
    else:
        h = hashlib.sha1(b"blob %d\0" % (os.path.getsize(path) if size is None else size))
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def manifest_entry(path: Path, rf: RemoteFile) -> dict[str, Any]:
    st = path.stat()
    return {"path": rf.path, "size": st.st_size, rf.algo: rf.expected, "mtime_ns": st.st_mtime_ns,
            "verified_at": _now()}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def read_manifest(local_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((local_dir / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_manifest(local_dir: Path, manifest: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=local_dir, prefix=f".{MANIFEST}.")
    os.fchmod(fd, 0o644)  # like the model files: readable by the service and a seed's mirror
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, local_dir / MANIFEST)


def public_endpoint(endpoint: str | None) -> str | None:
    """The endpoint as it may be written down: no user:password, query or fragment."""
    if not endpoint:
        return endpoint
    u = urlsplit(endpoint)
    host = f"[{u.hostname}]" if u.hostname and ":" in u.hostname else (u.hostname or "")
    return urlunsplit((u.scheme, host + (f":{u.port}" if u.port else ""), u.path, "", ""))


# --------------------------------------------------------------------------- verify / status

def entry_expected(entry: dict[str, Any]) -> tuple[str, str]:
    return ("sha256", entry["sha256"]) if "sha256" in entry else ("sha1", entry["sha1"])


def check_entry(local_dir: Path, entry: dict[str, Any], full: bool) -> str | None:
    """Why this manifest entry no longer describes the file on disk, or None."""
    try:
        st = (local_dir / entry["path"]).stat()
    except FileNotFoundError:
        return "missing"
    if st.st_size != entry["size"]:
        return f"size {st.st_size} != {entry['size']}"
    if st.st_mtime_ns != entry["mtime_ns"]:
        return "modified since verification (mtime changed)"
    if full:
        algo, want = entry_expected(entry)
        got = digest(local_dir / entry["path"], algo)
        if got != want:
            return f"{algo} mismatch: {got} != {want}"
    return None


def verify(local_dir: str | os.PathLike[str], full: bool = False, workers: int = 4) -> dict[str, Any]:
    """Compare the files with the manifest: size+mtime (cheap) or a full rehash (files in parallel).

    A full check that finds a corrupted file drops its manifest entry, so the next pull
    re-fetches it even though size and mtime still match.
    """
    local_dir = Path(local_dir)
    manifest = read_manifest(local_dir)
    if manifest is None:
        return {"ok": False, "dir": str(local_dir), "files": 0, "problems": [{"path": MANIFEST, "problem": "missing"}]}
    with ThreadPoolExecutor(max_workers=workers if full else 1) as pool:  # hashlib releases the GIL
        found = pool.map(lambda e: (e["path"], check_entry(local_dir, e, full)), manifest["files"])
        problems = [{"path": path, "problem": problem} for path, problem in found if problem]
    if full and problems:
        bad = {p["path"] for p in problems}
        manifest["files"] = [e for e in manifest["files"] if e["path"] not in bad]
        write_manifest(local_dir, manifest)
    return {"ok": not problems, "dir": str(local_dir), "commit": manifest.get("commit"),
            "files": len(manifest["files"]) + (len(problems) if full else 0), "problems": problems}


def repo_base(root: str | os.PathLike[str], repo_id: str) -> Path:
    if not REPO_ID.match(repo_id) or ".." in repo_id:  # it names a directory under root
        raise WeightsError(f"{repo_id!r} is not an 'org/name' repo id")
    return Path(root) / repo_id.replace("/", "--")


def status(root: str | os.PathLike[str], repo_id: str) -> dict[str, Any]:
    """What `current` points to and whether its manifest still checks out (cheap check).

    {"repo", "current"/"commit": sha or None, "ok"/"verified": bool, "dir", "files", "bytes", "problems"}
    """
    link = repo_base(root, repo_id) / "current"
    commit = os.readlink(link) if link.is_symlink() else None
    out: dict[str, Any] = {"repo": repo_id, "current": commit, "commit": commit, "ok": False, "verified": False}
    if commit:
        report = verify(link.parent / commit)
        manifest = read_manifest(link.parent / commit) or {}
        out.update(ok=report["ok"], verified=report["ok"], dir=report["dir"], files=report["files"],
                   problems=report["problems"], bytes=sum(e["size"] for e in manifest.get("files", [])))
    return out
