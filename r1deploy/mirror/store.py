"""The repository view: resolve revisions, list files, find their bytes (root, or a pull in place)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from r1deploy.guard import Refused, check_listing, within
from r1deploy.mirror.index import HEX40, PULL_MANIFEST, Entry, build_index, read_index, write_index
from r1deploy.mirror.publish import entries_from_pull, read_refs, repo_path


class HubError(Exception):
    """An error the Hub reports with X-Error-Code; huggingface-hub maps the code to its exception."""

    def __init__(self, code: str, message: str, status: int = 404, commit: str | None = None):
        super().__init__(message)
        self.code, self.status, self.commit = code, status, commit


def pull_complete(src: Path) -> bool:
    """The weights agent finished this directory: every selected file is in its manifest."""
    try:
        manifest = json.loads((src / PULL_MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return manifest.get("selected") == [f["path"] for f in manifest["files"]]


def upstream_listing(upstream: str, repo_id: str, commit: str, token: str | None = None) -> list[Entry]:
    """A commit's files as another Hub (or mirror) lists them: sizes and hashes, no content."""
    url: str | None = f"{upstream.rstrip('/')}/api/models/{repo_id}/tree/{commit}?recursive=true&expand=false"
    origin = urlsplit(url)[:2]
    headers = {"User-Agent": "r1deploy-mirror", **({"Authorization": f"Bearer {token}"} if token else {})}
    entries = []
    while url:
        with urlopen(Request(url, headers=headers), timeout=30) as r:
            page = json.loads(r.read())
            link = r.headers.get("Link") or ""
        for f in page:
            if f.get("type") == "file":
                lfs = f.get("lfs")
                entries.append(Entry(f["path"], f["size"], lfs["oid"] if lfs else "", "" if lfs else f["oid"],
                                     bool(lfs)))
        m = re.search(r'<([^>]+)>;\s*rel="next"', link)
        url = m.group(1) if m else None
        if url and urlsplit(url)[:2] != origin:  # the token goes with every page: only to upstream itself
            raise Refused(f"upstream's next page {url!r} is not on {upstream}")
    check_listing([e.path for e in entries], f"upstream {upstream} ({repo_id}@{commit})")
    return entries


class Store:
    """Read side of the layout, with per-commit indexes cached in memory.

    `pulled` maps repo ids to directories the weights agent pulls into (named by their commit),
    served in place; `upstream` lists such a directory's commit while its pull is under way.
    """

    def __init__(self, root: str | os.PathLike[str], pulled: dict[str, Path] | None = None,
                 upstream: str | None = None, upstream_token: str | None = None):
        self.root = Path(root)
        self.pulled = {k: Path(v) for k, v in (pulled or {}).items()}
        self.upstream, self.upstream_token = upstream, upstream_token
        self._indexes: dict[tuple[str, str], dict[str, Entry]] = {}
        self._lock = threading.Lock()

    def repo_dir(self, repo_id: str) -> Path:
        if repo_id in self.pulled:
            return self.pulled[repo_id]
        try:
            repo_dir = repo_path(self.root, repo_id)
        except ValueError:
            raise HubError("RepoNotFound", f"Repository {repo_id!r} not found") from None
        if not (repo_dir / "commits").is_dir():
            raise HubError("RepoNotFound", f"Repository {repo_id!r} not found")
        return repo_dir

    def resolve(self, repo_id: str, revision: str) -> str:
        if repo_id in self.pulled:  # one commit: the one being (or already) pulled
            commit = self.pulled[repo_id].name
            if revision not in (commit, "main"):
                raise HubError("RevisionNotFound", f"Revision {revision!r} not served here for {repo_id!r}")
            return commit
        repo_dir = self.repo_dir(repo_id)
        commit = revision if HEX40.match(revision) else read_refs(repo_dir).get(revision)
        if not commit or not HEX40.match(commit) or not (repo_dir / "commits" / commit).is_dir():
            raise HubError("RevisionNotFound", f"Revision {revision!r} not found in {repo_id!r}")
        return commit

    def files(self, repo_id: str, commit: str) -> dict[str, Entry]:
        key = (repo_id, commit)
        with self._lock:
            if key not in self._indexes:
                self._indexes[key] = {e.path: e for e in self._load(repo_id, commit)}
            return self._indexes[key]

    def _load(self, repo_id: str, commit: str) -> list[Entry]:
        """The commit's entries, every path checked: a listing that names one unsafe path is not served."""
        try:
            if repo_id not in self.pulled:
                return self._load_published(repo_id, commit)
            if pull_complete(self.pulled[repo_id]):
                return entries_from_pull(self.pulled[repo_id])[2]  # the agent's verified hashes, paths checked
        except Refused as exc:
            raise HubError("UnsafeListing", str(exc), status=500) from None
        if not self.upstream:
            raise HubError("RevisionNotFound", f"{repo_id}@{commit} is not pulled here yet", status=503)
        try:
            return upstream_listing(self.upstream, repo_id, commit, self.upstream_token)
        except Refused as exc:
            raise HubError("UnsafeListing", str(exc), status=502) from None

    def _load_published(self, repo_id: str, commit: str) -> list[Entry]:
        repo_dir = self.repo_dir(repo_id)
        entries = read_index(repo_dir, commit)
        if entries is None:  # dropped in by hand: hash once, keep the index
            entries = build_index(repo_dir / "commits" / commit)
            write_index(repo_dir, commit, entries)
        check_listing([e.path for e in entries], f"the index of {repo_id}@{commit}")
        return entries

    def served_dir(self, repo_id: str, commit: str) -> Path:
        if repo_id in self.pulled:
            return self.pulled[repo_id]
        return self.repo_dir(repo_id) / "commits" / commit

    def file_path(self, repo_id: str, commit: str, entry: Entry) -> Path:
        """Where the entry's bytes are; refused if its real path (symlinks followed) leaves the served dir.

        A pulled directory's file is present only once the agent verified it.
        """
        base = self.served_dir(repo_id, commit)
        path = base / entry.path
        if not within(base, path):
            raise HubError("EntryNotFound", f"{entry.path!r} is not under the served directory", commit=commit)
        return path


def tree_entries(files: dict[str, Entry], path: str, recursive: bool) -> list[dict[str, Any]]:
    """Hub tree listing of `path` (a folder, '' for the root): files plus folders, sorted."""
    prefix = f"{path}/" if path else ""
    out: dict[str, dict[str, Any]] = {}
    folders: dict[str, list[str]] = {}
    for e in sorted(files.values(), key=lambda e: e.path):
        if not e.path.startswith(prefix):
            continue
        parts = e.path[len(prefix):].split("/")
        for depth in range(1, len(parts)):
            folder = prefix + "/".join(parts[:depth])
            folders.setdefault(folder, []).append(e.oid + e.path)
            if not recursive:
                break
        if recursive or len(parts) == 1:
            out[e.path] = e.tree_json()
    for folder, oids in folders.items():
        oid = hashlib.sha1("\n".join(sorted(oids)).encode()).hexdigest()
        out[folder] = {"type": "directory", "oid": oid, "size": 0, "path": folder}
    if path and not out:
        raise HubError("EntryNotFound", f"{path!r} is not a folder of this revision")
    return [out[k] for k in sorted(out)]


def sibling_json(e: Entry, blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": e.path}
    out: dict[str, Any] = {"rfilename": e.path, "size": e.size, "blobId": e.oid}
    if e.lfs:
        out["lfs"] = {"sha256": e.sha256, "size": e.size, "pointerSize": len(e.pointer)}
    return out


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single `bytes=` range; None means the whole file.

    Raises ValueError when the range cannot be satisfied (-> 416).
    """
    if not header or not header.startswith("bytes=") or "," in header:
        return None  # no range, or a multi-range we answer with the whole file
    first, _, last = header[len("bytes="):].strip().partition("-")
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n <= 0:
            raise ValueError(header)
        return max(size - n, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise ValueError(header)
    return start, end
