"""A Hub-compatible HTTP mirror: serves a directory of published repos to huggingface-hub clients.

It speaks the subset of the Hub API that ``snapshot_download``/``hf_hub_download``/``HfApi``
use (revision, tree with paging, paths-info, resolve with HEAD/GET and Range), so a seed node
can serve a model on the LAN with the same download code that talks to the real Hub.

On-disk layout under ``root``::

    <org>/<name>/refs.json                    {"main": "<commit>"}
    <org>/<name>/commits/<commit>/...files    immutable, written once by publish()
    <org>/<name>/index/<commit>.json          sizes and hashes, computed once at publish time

Hashes are never computed per request: a commit directory without an index is hashed once on
first use and its index written then.

A seed node serves its weights pull in place (``serve --pulled org/name=<root>/<org>--<name>/<commit>``):
the agent's manifest gives the hashes (no rehash of shards). With ``--upstream`` the listing of a
pull still under way comes from upstream, and a file not yet verified on disk is waited for
(``--pending-wait`` seconds, then 503): the other nodes can pull while the seed is still pulling.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit
from urllib.request import Request, urlopen

HEX40 = re.compile(r"^[0-9a-f]{40}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Files the Hub stores in LFS by default (.gitattributes of a new repo), or any large file.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".h5", ".msgpack",
                ".model", ".npy", ".npz", ".zst", ".gz", ".tar")
LFS_MIN_SIZE = 10 * 1024 * 1024
CHUNK = 1024 * 1024
PULL_MANIFEST = ".r1deploy-manifest.json"  # written by r1deploy.weights next to the files it verified
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"


# --------------------------------------------------------------------------- hashing / index

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
    """Relative paths of regular files under src, skipping VCS and tool caches (hidden dirs)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            full = Path(dirpath, name)
            if full.is_file() and not full.is_symlink():
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


def _write_json_atomic(path: Path, data: Any) -> None:
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
    _write_json_atomic(_index_path(repo_dir, commit), {
        "commit": commit,
        "files": [e.__dict__ for e in entries],
    })


def read_index(repo_dir: Path, commit: str) -> list[Entry] | None:
    try:
        data = json.loads(_index_path(repo_dir, commit).read_text())
    except FileNotFoundError:
        return None
    return [Entry(**f) for f in data["files"]]


# --------------------------------------------------------------------------- publish

def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def publish(src_dir: str | os.PathLike[str], root: str | os.PathLike[str], repo_id: str | None = None,
            branch: str = "main", commit: str | None = None) -> str:
    """Publish the files of src_dir as a commit of repo_id and point branch at it; returns the commit.

    A directory pulled by the weights agent is published under its upstream repo and commit
    (so nodes pulling that pinned commit can use this mirror), reusing its verified hashes.
    Otherwise the commit id is derived from the content, unless given.
    """
    src = Path(src_dir)
    pulled = entries_from_pull(src)
    if pulled:
        repo_id, commit = _agree(repo_id, pulled[0], "repo"), _agree(commit, pulled[1], "commit")
        entries = pulled[2]
    else:
        entries = build_index(src)
    if not entries:
        raise ValueError(f"{src} has no files to publish")
    if repo_id is None:
        raise ValueError("a repo id is needed (org/name)")
    commit = commit or commit_id(entries)
    if not HEX40.match(commit):
        raise ValueError(f"commit {commit!r} is not 40 hex digits")
    repo_dir = _repo_dir(Path(root), repo_id)
    commit_dir = repo_dir / "commits" / commit
    if not commit_dir.is_dir():
        staging = Path(tempfile.mkdtemp(dir=_mkdir(repo_dir / "commits"), prefix=".staging-"))
        for e in entries:
            _link_or_copy(src / e.path, staging / e.path)
        os.replace(staging, commit_dir)
    write_index(repo_dir, commit, entries)
    refs = _read_refs(repo_dir)
    refs[branch] = commit
    _write_json_atomic(repo_dir / "refs.json", refs)
    return commit


def _agree(given: str | None, found: str, what: str) -> str:
    if given and given != found:
        raise ValueError(f"{what} {given!r} differs from the pulled directory's {found!r}")
    return found


def entries_from_pull(src: Path) -> tuple[str, str, list[Entry]] | None:
    """Repo, commit and entries of a directory the weights agent verified, or None.

    LFS files keep the sha256 the agent checked (no rehash of large shards); small files are
    hashed again, which is cheap. A file changed since its verification is refused.
    """
    try:
        manifest = json.loads((src / PULL_MANIFEST).read_text())
    except FileNotFoundError:
        return None
    entries = []
    for f in manifest["files"]:
        st = (src / f["path"]).stat()
        if (st.st_size, st.st_mtime_ns) != (f["size"], f["mtime_ns"]):
            raise ValueError(f"{src / f['path']} changed since it was verified; run the weights agent again")
        if "sha256" in f:
            entries.append(Entry(f["path"], f["size"], f["sha256"], "", True))
        else:
            sha256, sha1, size = hash_file(src / f["path"])
            entries.append(Entry(f["path"], size, sha256, sha1, False))
    return manifest["repo"], manifest["commit"], entries


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _repo_dir(root: Path, repo_id: str) -> Path:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(NAME.match(p) and ".." not in p for p in parts):
        raise ValueError(f"{repo_id!r} is not an 'org/name' repo id")
    return root / parts[0] / parts[1]


def _read_refs(repo_dir: Path) -> dict[str, str]:
    try:
        return json.loads((repo_dir / "refs.json").read_text())
    except FileNotFoundError:
        return {}


# --------------------------------------------------------------------------- repository view

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
            repo_dir = _repo_dir(self.root, repo_id)
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
        commit = revision if HEX40.match(revision) else _read_refs(repo_dir).get(revision)
        if not commit or not (repo_dir / "commits" / commit).is_dir():
            raise HubError("RevisionNotFound", f"Revision {revision!r} not found in {repo_id!r}")
        return commit

    def files(self, repo_id: str, commit: str) -> dict[str, Entry]:
        key = (repo_id, commit)
        with self._lock:
            if key not in self._indexes:
                self._indexes[key] = {e.path: e for e in self._load(repo_id, commit)}
            return self._indexes[key]

    def _load(self, repo_id: str, commit: str) -> list[Entry]:
        if repo_id in self.pulled:
            src = self.pulled[repo_id]
            if pull_complete(src):
                return entries_from_pull(src)[2]  # the agent's verified hashes
            if self.upstream:
                return upstream_listing(self.upstream, repo_id, commit, self.upstream_token)
            raise HubError("RevisionNotFound", f"{repo_id}@{commit} is not pulled here yet", status=503)
        repo_dir = self.repo_dir(repo_id)
        entries = read_index(repo_dir, commit)
        if entries is None:  # dropped in by hand: hash once, keep the index
            entries = build_index(repo_dir / "commits" / commit)
            write_index(repo_dir, commit, entries)
        return entries

    def file_path(self, repo_id: str, commit: str, entry: Entry) -> Path:
        if repo_id in self.pulled:
            return self.pulled[repo_id] / entry.path  # present only once the agent verified it
        return self.repo_dir(repo_id) / "commits" / commit / entry.path


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


def _sibling(e: Entry, blobs: bool) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- HTTP

class AccessLog:
    """JSON lines, one per request: what was asked and how many body bytes went out."""

    def __init__(self, path: str | None):
        self._file = open(path, "a", buffering=1) if path else None  # noqa: SIM115 - lives with the server
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        line = json.dumps(record, sort_keys=True)
        with self._lock:
            self._file.write(line + "\n")


class MirrorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # many nodes x parallel downloads connect at once during a fan-out

    def __init__(self, address: tuple[str, int], root: str | os.PathLike[str], *,
                 log_path: str | None = None, max_rate: int | None = None, page_size: int = 1000,
                 token: str | None = None, pulled: dict[str, Path] | None = None, upstream: str | None = None,
                 upstream_token: str | None = None, pending_wait: float = 45.0):
        self.store = Store(root, pulled, upstream, upstream_token)
        self.pending_wait = pending_wait  # below the agent's 60 s read timeout
        self.access_log = AccessLog(log_path)
        self.max_rate = max_rate  # bytes/s per response: fair sharing of a seed's uplink
        self.page_size = page_size
        self.token = token
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, MirrorHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class MirrorHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries a Content-Length
    timeout = 120  # seconds: idle keep-alive connections and stalled clients give their thread back
    server: MirrorServer
    server_version = "r1deploy-mirror"

    # ---- dispatch

    def do_GET(self) -> None:
        self._handle(body=True)

    def do_HEAD(self) -> None:
        self._handle(body=False)

    def do_POST(self) -> None:
        self._handle(body=True)

    def _handle(self, body: bool) -> None:
        self._sent, self._status, self._started = 0, 0, time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length else b""  # read now, so keep-alive stays in step
        try:
            self._authorize()
            self._route(body)
        except HubError as exc:
            self._error(exc)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):  # the client left or stalled
            self.close_connection = True
        except Exception as exc:  # a bug must not leave a keep-alive client hanging
            self.close_connection = True
            if not self._status:
                self._error(HubError("ServerError", f"{type(exc).__name__}: {exc}", status=500))
            raise
        finally:
            self._log()

    def _authorize(self) -> None:
        if self.server.token is None:
            return
        if self.headers.get("Authorization", "") != f"Bearer {self.server.token}":
            raise HubError("RepoNotFound", "Invalid credentials in Authorization header", status=401)

    def _route(self, body: bool) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if any(seg in (".", "..") or "\0" in seg or "\\" in seg for p in parts for seg in p.split("/")):
            raise HubError("EntryNotFound", "invalid path", status=400)
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            self._api(parts[2:], query)
        elif len(parts) >= 5 and parts[2] == "resolve":
            self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), body)
        else:
            raise HubError("RepoNotFound", f"no such endpoint: {url.path}")

    def _api(self, parts: list[str], query: dict[str, str]) -> None:
        repo_id, rest = "/".join(parts[:2]), parts[2:]
        if self.command == "POST" and len(rest) == 2 and rest[0] == "paths-info":
            return self._paths_info(repo_id, rest[1])
        if not rest or (len(rest) == 2 and rest[0] == "revision"):
            return self._revision(repo_id, rest[1] if rest else "main", query)
        if len(rest) >= 2 and rest[0] == "tree":
            return self._tree(repo_id, rest[1], "/".join(rest[2:]), query)
        raise HubError("RepoNotFound", f"no such endpoint: {self.path}")

    # ---- endpoints

    def _revision(self, repo_id: str, revision: str, query: dict[str, str]) -> None:
        commit = self.server.store.resolve(repo_id, revision)
        files = self.server.store.files(repo_id, commit)
        blobs = query.get("blobs", "false").lower() == "true"  # model_info(files_metadata=True)
        self._json({
            "id": repo_id, "modelId": repo_id, "sha": commit, "private": False, "disabled": False,
            "gated": False, "tags": [], "downloads": 0, "likes": 0,
            "siblings": [_sibling(files[p], blobs) for p in sorted(files)],
        }, commit)

    def _tree(self, repo_id: str, revision: str, path: str, query: dict[str, str]) -> None:
        commit = self.server.store.resolve(repo_id, revision)
        recursive = query.get("recursive", "false").lower() == "true"
        listing = tree_entries(self.server.store.files(repo_id, commit), path, recursive)
        # The Hub pages by 1000 entries (50 when expanded); the cursor here is an offset.
        page = self.server.page_size if query.get("expand", "false").lower() != "true" else 50
        start = int(query.get("cursor", "0") or 0)
        headers = {}
        if start + page < len(listing):
            nxt = dict(query, cursor=str(start + page))
            qs = "&".join(f"{k}={quote(v)}" for k, v in nxt.items())
            host = self.headers.get("Host") or self.server.url.split("://", 1)[1]
            headers["Link"] = f'<http://{host}{urlsplit(self.path).path}?{qs}>; rel="next"'
        self._json(listing[start:start + page], commit, headers)

    def _paths_info(self, repo_id: str, revision: str) -> None:
        commit = self.server.store.resolve(repo_id, revision)
        form = parse_qs(self._body.decode())
        files = self.server.store.files(repo_id, commit)
        listing = {e["path"]: e for e in tree_entries(files, "", recursive=True)}
        self._json([listing[p] for p in form.get("paths", []) if p in listing], commit)

    def _resolve(self, repo_id: str, revision: str, path: str, body: bool) -> None:
        store = self.server.store
        commit = store.resolve(repo_id, revision)
        entry = store.files(repo_id, commit).get(path)
        if entry is None:
            raise HubError("EntryNotFound", f"{path!r} not found at {commit}", commit=commit)
        try:
            span = parse_range(self.headers.get("Range"), entry.size)
        except ValueError:
            self._status = 416
            self.send_response(416)
            self._common_headers(commit, entry)
            self.send_header("Content-Range", f"bytes */{entry.size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = span if span else (0, entry.size - 1)
        length = max(end - start + 1, 0)
        path = store.file_path(repo_id, commit, entry)
        if body and length and repo_id in store.pulled:
            try:
                self._open(path).close()
            except FileNotFoundError:
                raise HubError("Pending", f"{path.name} is still being pulled; retry", status=503,
                               commit=commit) from None
        self._status = 206 if span else 200
        self.send_response(self._status)
        self._common_headers(commit, entry)
        if span:
            self.send_header("Content-Range", f"bytes {start}-{end}/{entry.size}")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if body and length:
            with open(path, "rb") as f:
                self._send_file(f, start, length)

    def _open(self, path: Path) -> Any:
        """The file, waiting a while for one a pull is still fetching (a pulled directory only)."""
        deadline = time.monotonic() + self.server.pending_wait
        while True:
            try:
                return open(path, "rb")
            except FileNotFoundError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def _common_headers(self, commit: str, entry: Entry) -> None:
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{entry.etag}"')
        self.send_header("X-Linked-Etag", f'"{entry.etag}"')
        self.send_header("X-Linked-Size", str(entry.size))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")

    # ---- plumbing

    def _send_file(self, f: Any, offset: int, length: int) -> None:
        """Body straight from the page cache with sendfile, optionally paced to max_rate."""
        rate = self.server.max_rate
        step = max(rate // 10, 1) if rate else 4 * CHUNK
        end = offset + length
        f.seek(offset)
        try:
            while (pos := f.tell()) < end:
                tick = time.monotonic()
                # socket.sendfile copes with the socket timeout and leaves f at the bytes really sent.
                if self.connection.sendfile(f, pos, min(step, end - pos)) == 0:
                    raise BrokenPipeError("client went away")
                if rate:
                    time.sleep(max((f.tell() - pos) / rate - (time.monotonic() - tick), 0))
        finally:
            self._sent += f.tell() - offset

    def _json(self, data: Any, commit: str | None = None, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        self._status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if commit:
            self.send_header("X-Repo-Commit", commit)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
            self._sent += len(payload)

    def _error(self, exc: HubError) -> None:
        payload = json.dumps({"error": str(exc)}).encode()
        self._status = exc.status
        self.send_response(exc.status)
        self.send_header("X-Error-Code", exc.code)
        self.send_header("X-Error-Message", str(exc))
        if exc.commit:
            self.send_header("X-Repo-Commit", exc.commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _log(self) -> None:
        # The Authorization header's presence only: its value never reaches a log.
        self.server.access_log.write({
            "ts": round(time.time(), 3), "client": self.client_address[0], "method": self.command,
            "path": urlsplit(self.path).path, "range": self.headers.get("Range"), "status": self._status,
            "bytes": self._sent, "auth": "Authorization" in self.headers,
            "ms": round((time.monotonic() - self._started) * 1000, 1),
        })

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the JSON access log replaces stderr chatter


def serve(root: str, host: str, port: int, **kwargs: Any) -> MirrorServer:
    """A bound, not yet running server (call serve_forever); port 0 picks a free port."""
    return MirrorServer((host, port), root, **kwargs)


# --------------------------------------------------------------------------- CLI

def _read_token(path: str | None) -> str | None:
    return Path(path).read_text().strip() if path else None


def _pulled(specs: list[str]) -> dict[str, Path]:
    out = {}
    for spec in specs:
        repo_id, sep, path = spec.partition("=")
        _repo_dir(Path("/"), repo_id)  # validates org/name
        if not sep or not HEX40.match(Path(path).name):
            raise SystemExit(f"--pulled {spec!r}: want org/name=<dir named by its 40-hex commit>")
        out[repo_id] = Path(path)
    return out


def _upstream(url: str | None) -> str | None:
    """`hub`: the endpoint huggingface-hub itself uses on this host (HF_ENDPOINT or its default)."""
    if url != "hub":
        return url
    from huggingface_hub import constants

    return constants.ENDPOINT


def _serve(args: argparse.Namespace) -> int:
    args.upstream = _upstream(args.upstream)
    server = serve(args.root, args.host, args.port, log_path=args.log, max_rate=args.max_rate,
                   page_size=args.page_size, token=_read_token(args.token_file), pulled=_pulled(args.pulled),
                   upstream=args.upstream, upstream_token=_read_token(args.upstream_token_file),
                   pending_wait=args.pending_wait)
    # The first stdout line tells a supervisor (or a test) the bound address.
    print(f"serving {args.root} on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _publish(args: argparse.Namespace) -> int:
    commit = publish(args.src, args.root, args.repo, branch=args.branch, commit=args.commit)
    repo = args.repo or json.loads((Path(args.src) / PULL_MANIFEST).read_text())["repo"]
    print(json.dumps({"repo": repo, "branch": args.branch, "commit": commit}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mirror", help="Hub-compatible mirror: publish repos and serve them over HTTP")
    msub = p.add_subparsers(dest="mirror_command", required=True)
    s = msub.add_parser("serve", help="serve a mirror root to huggingface-hub clients")
    s.add_argument("--root", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8090, help="0 picks a free port (printed on stdout)")
    s.add_argument("--log", help="append a JSON line per request to this file")
    s.add_argument("--max-rate", type=int, help="cap each response at this many bytes/s")
    s.add_argument("--page-size", type=int, default=1000, help="tree entries per page")
    s.add_argument("--token-file", help="require 'Authorization: Bearer <token from file>'")
    s.add_argument("--pulled", action="append", default=[], metavar="ORG/NAME=DIR",
                   help="serve a weights-agent pull in place (repeatable); DIR is <root>/<org>--<name>/<commit>")
    s.add_argument("--upstream", help="list a pulled commit from this hub while its pull is under way "
                   "('hub': huggingface-hub's own endpoint)")
    s.add_argument("--upstream-token-file", help="hub token for --upstream")
    s.add_argument("--pending-wait", type=float, default=45.0,
                   help="seconds a request waits for a file the pull has not verified yet (then 503)")
    s.set_defaults(func=_serve)
    pub = msub.add_parser("publish", help="publish a directory as a commit of a repo")
    pub.add_argument("src")
    pub.add_argument("--root", required=True)
    pub.add_argument("--repo", help="org/name (default: the repo of a directory pulled by the weights agent)")
    pub.add_argument("--branch", default="main")
    pub.add_argument("--commit", help="40-hex commit id (default: the pulled commit, or one derived from content)")
    pub.set_defaults(func=_publish)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m r1deploy.mirror")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["mirror", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
