"""Host agent for model weights: pull a pinned repo into real files, verify every byte, publish.

    python -m r1deploy.weights pull --repo org/name --revision SHA --root /srv/models --endpoint URL
        [--token-file F] [--allow PAT ...] [--ignore PAT ...] [--extra-bytes N] [--margin-gib G] [--workers 4]
    python -m r1deploy.weights plan   (same arguments as pull: JSON of bytes to fetch vs free disk)
    python -m r1deploy.weights verify --dir /srv/models/org--name/SHA [--full]
    python -m r1deploy.weights status --root /srv/models --repo org/name

Layout: ``<root>/<org>--<name>/<commit>/`` holds the files and ``.r1deploy-manifest.json``;
``<root>/<org>--<name>/current`` is a symlink to ``<commit>`` moved only after verification.

Unlike huggingface-hub's own download (which restarts a killed file from zero and checks only
sizes), each file is fetched into ``<file>.part`` with ranged requests that continue from the
bytes on disk, hashed against the tree listing (sha256 for LFS, git sha1 otherwise), and only
then renamed into place. After a killed process the whole .part is continued; after a reboot,
only up to its last fsync (``<file>.part.json`` records it per boot id). It runs on hosts with
only huggingface-hub, requests and pydantic.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

# Before huggingface_hub reads its constants: no telemetry, plain HTTP downloads. The hub client
# and requests are imported only on the network path: status and no-op pulls stay stdlib-fast.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

MANIFEST = ".r1deploy-manifest.json"
HEX40 = re.compile(r"^[0-9a-f]{40}$")
CHUNK = 1024 * 1024
SYNC_EVERY = 64 * CHUNK  # bytes of a .part that a reboot may cost at most
GIB = 1024**3
PROGRESS_EVERY_S = 2.0
RETRIES = 5  # transient network errors per file, counted since the last byte received
PENDING_MAX_S = 4 * 3600  # how long a file may stay "Pending" at a pipelined seed (its own upstream pull)
USER_AGENT = "r1deploy-weights"


class WeightsError(Exception):
    exit_code = 1


class DiskSpaceError(WeightsError):
    exit_code = 3


class IntegrityError(WeightsError):
    exit_code = 4


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

def _entry_expected(entry: dict[str, Any]) -> tuple[str, str]:
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
        algo, want = _entry_expected(entry)
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
    # A selected file without an entry was dropped by an earlier full check: still unverified,
    # so the cheap check (and the converge that trusts it) must not call the commit verified.
    listed = {e["path"] for e in manifest["files"]}
    problems += [{"path": path, "problem": "not verified (a full check found it corrupt)"}
                 for path in manifest.get("selected", []) if path not in listed]
    if full and problems:
        bad = {p["path"] for p in problems}
        manifest["files"] = [e for e in manifest["files"] if e["path"] not in bad]
        write_manifest(local_dir, manifest)
    return {"ok": not problems, "dir": str(local_dir), "commit": manifest.get("commit"),
            "files": len(manifest["files"]) + (len(problems) if full else 0), "problems": problems}


def repo_base(root: str | os.PathLike[str], repo_id: str) -> Path:
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


# --------------------------------------------------------------------------- progress

class Progress:
    """Plain-text progress lines (bytes, rate, ETA) every few seconds: readable in a journal."""

    def __init__(self, label: str, total: int, out: TextIO):
        self.label, self.total, self.out = label, total, out
        self.done = 0
        self.started = self.last = time.monotonic()
        self._lock = threading.Lock()

    def add(self, n: int, current: str) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self.last < PROGRESS_EVERY_S:
                return
            self.last = now
        self.line(current)

    def grow(self, n: int) -> None:
        """More to fetch than planned (a server ignored Range, a file failed verification)."""
        with self._lock:
            self.total += n

    def line(self, current: str = "") -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        eta = f"{(self.total - self.done) / rate:.0f}s" if rate > 0 else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        print(f"weights {self.label}: {_mib(self.done)}/{_mib(self.total)} MiB ({pct:.0f}%) "
              f"{_mib(rate)} MiB/s ETA {eta} {current}".rstrip(), file=self.out, flush=True)


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


# --------------------------------------------------------------------------- pull

@dataclass
class Plan:
    manifest: dict[str, Any] | None  # what was on disk when planning
    verified: list[dict[str, Any]]  # manifest entries for files already good on disk
    fetch: list[tuple[RemoteFile, int]]  # files to download, with bytes already in .part

    @property
    def bytes_to_fetch(self) -> int:
        return sum(rf.size - have for rf, have in self.fetch)


def list_remote(api: Any, repo_id: str, commit: str, allow: list[str] | None,
                ignore: list[str] | None) -> list[RemoteFile]:
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import filter_repo_objects

    files = [f for f in api.list_repo_tree(repo_id, revision=commit, recursive=True) if isinstance(f, RepoFile)]
    chosen = filter_repo_objects(files, allow_patterns=allow or None, ignore_patterns=ignore or None,
                                 key=lambda f: f.path)
    return sorted((RemoteFile.from_hub(f) for f in chosen), key=lambda rf: rf.path)


def _part(target: Path) -> Path:
    return target.with_name(target.name + ".part")


# A .part is trusted up to its full length after a killed process (the page cache survived),
# but after a reboot only up to the last fsync: the sidecar records both, per boot.

def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _sidecar(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def resume_point(part: Path) -> int:
    """Bytes of a .part that can be continued from (0 if there is none)."""
    have = _size(part)
    try:
        mark = json.loads(_sidecar(part).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return have
    return have if mark.get("boot_id") == _boot_id() else min(have, int(mark.get("synced", 0)))


def _mark_synced(part: Path, synced: int) -> None:
    tmp = _sidecar(part).with_suffix(".tmp")
    tmp.write_text(json.dumps({"boot_id": _boot_id(), "synced": synced}))
    os.replace(tmp, _sidecar(part))


def plan_pull(local_dir: Path, files: list[RemoteFile], log: TextIO) -> Plan:
    """Decide per file: already verified (manifest size+mtime, or a rehash), or fetch (resuming a .part).

    Changes nothing on disk: a bad file is replaced only when its verified successor is renamed over it.
    """
    manifest = read_manifest(local_dir) if local_dir.is_dir() else None
    known = {e["path"]: e for e in (manifest or {}).get("files", [])}
    plan = Plan(manifest, [], [])
    for rf in files:
        target = local_dir / rf.path
        entry = known.get(rf.path)
        if entry and _entry_expected(entry) == (rf.algo, rf.expected) and not check_entry(local_dir, entry, False):
            plan.verified.append(entry)
            continue
        if target.is_file():
            if target.stat().st_size == rf.size and digest(target, rf.algo) == rf.expected:
                plan.verified.append(manifest_entry(target, rf))
                continue
            print(f"weights: {rf.path} on disk does not match {rf.algo} {rf.expected[:12]}; re-fetching",
                  file=log, flush=True)
        have = resume_point(_part(target))
        plan.fetch.append((rf, have if have <= rf.size else 0))
    return plan


def disk_check(local_dir: Path, fetch_bytes: int, extra_bytes: int, margin_gib: float) -> dict[str, Any]:
    """Bytes needed (to fetch + extra + margin) against free space on the target's filesystem."""
    probe = local_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    margin = int(margin_gib * GIB)
    need = fetch_bytes + extra_bytes + margin
    return {"bytes_to_fetch": fetch_bytes, "extra_bytes": extra_bytes, "margin_bytes": margin,
            "need": need, "free": free, "fs_path": str(probe), "fits": need <= free}


def preflight(local_dir: Path, fetch_bytes: int, extra_bytes: int, margin_gib: float) -> None:
    """Refuse before writing anything when the target filesystem cannot take the pull."""
    check = disk_check(local_dir, fetch_bytes, extra_bytes, margin_gib)
    need, free, probe, margin = check["need"], check["free"], check["fs_path"], check["margin_bytes"]
    if not check["fits"]:
        raise DiskSpaceError(
            f"not enough disk for {local_dir}: need {need} bytes ({need / GIB:.2f} GiB) = "
            f"{fetch_bytes} to fetch + {extra_bytes} extra + {margin} margin ({margin_gib} GiB), "
            f"but {probe} has {free} bytes ({free / GIB:.2f} GiB) free")


class Fetcher:
    """Ranged downloads into .part files that continue from the bytes already on disk."""

    def __init__(self, repo_id: str, commit: str, endpoint: str | None, token: str | None, progress: Progress,
                 log: TextIO):
        from huggingface_hub.utils import build_hf_headers

        self.repo_id, self.commit, self.endpoint = repo_id, commit, endpoint
        self.headers = build_hf_headers(token=token or False, user_agent=USER_AGENT)
        self.headers["Accept-Encoding"] = "identity"  # byte offsets must be offsets in the file
        self._local = threading.local()  # one keep-alive session per download thread
        self.progress, self.log = progress, log
        self.fetched = 0
        self._lock = threading.Lock()

    @property
    def session(self) -> Any:
        import requests

        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def fetch_all(self, todo: list[RemoteFile], local_dir: Path, workers: int) -> list[dict[str, Any]]:
        """Fetch files in parallel, largest first; every file is attempted before the first error is raised."""
        todo = sorted(todo, key=lambda rf: -rf.size)
        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            futures = [pool.submit(self.fetch, rf, local_dir / rf.path) for rf in todo]
            wait(futures)
        errors = [f.exception() for f in futures if f.exception()]
        if errors:
            raise errors[0]
        return [f.result() for f in futures]

    def fetch(self, rf: RemoteFile, target: Path) -> dict[str, Any]:
        part = _part(target)
        part.parent.mkdir(parents=True, exist_ok=True)
        keep = resume_point(part)
        if keep > rf.size:  # longer than the listing says: cannot be a prefix of the file
            keep = 0
        if _size(part) > keep:  # what a reboot may have left unsynced, or an oversized part
            os.truncate(part, keep)
        for attempt in (1, 2):
            part.touch(exist_ok=True)  # empty files too end up verified and renamed
            self._download(rf, part)
            got = digest(part, rf.algo, part.stat().st_size)
            if part.stat().st_size == rf.size and got == rf.expected:
                os.replace(part, target)
                _sidecar(part).unlink(missing_ok=True)
                return manifest_entry(target, rf)
            print(f"weights: {rf.path} failed verification ({rf.algo} {got[:12]} != {rf.expected[:12]}, "
                  f"{part.stat().st_size}/{rf.size} bytes); "
                  + ("re-fetching from zero" if attempt == 1 else "giving up"), file=self.log, flush=True)
            part.unlink()
            _sidecar(part).unlink(missing_ok=True)
            self.progress.grow(rf.size)
        raise IntegrityError(f"{rf.path}: content from {public_endpoint(self.endpoint) or 'the hub'} does "
                             f"not match the tree listing's {rf.algo} {rf.expected}; not published")

    def _download(self, rf: RemoteFile, part: Path) -> None:
        import requests
        from huggingface_hub import hf_hub_url

        url = hf_hub_url(self.repo_id, rf.path, revision=self.commit, endpoint=self.endpoint)
        failures = 0
        pending_since: float | None = None
        while (have := _size(part)) < rf.size:
            try:
                self._stream(url, rf, part, have)
                if _size(part) <= have:
                    raise _Retry("the server sent no bytes")
                failures, pending_since = 0, None
            except _Pending:
                pending_since = pending_since or time.monotonic()
                if time.monotonic() - pending_since > PENDING_MAX_S:
                    raise WeightsError(f"{rf.path}: the seed still had not verified it after "
                                       f"{PENDING_MAX_S} s; rerun to continue") from None
                print(f"weights: {rf.path}: the seed is still pulling it; waiting", file=self.log, flush=True)
                time.sleep(2)
            except (_Retry, requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                failures += 1
                reason = str(exc) if isinstance(exc, _Retry) else type(exc).__name__
                if failures > RETRIES:
                    raise WeightsError(f"{rf.path}: download failed {failures} times in a row "
                                       f"({reason}); rerun to continue from the bytes on disk") from None
                print(f"weights: {rf.path}: {reason}, retrying from byte {_size(part)}", file=self.log, flush=True)
                time.sleep(min(2 ** (failures - 1), 30))

    def _stream(self, url: str, rf: RemoteFile, part: Path, have: int) -> None:
        headers = dict(self.headers, Range=f"bytes={have}-") if have else self.headers
        with self.session.get(url, headers=headers, stream=True, timeout=(10, 60)) as r:
            if r.status_code == 503 and r.headers.get("X-Error-Code") == "Pending":
                raise _Pending()  # a pipelined seed has not finished verifying this file yet
            if r.status_code == 429 or r.status_code >= 500:  # a busy seed or hub: worth a retry
                raise _Retry(f"HTTP {r.status_code}")
            if r.status_code not in (200, 206):
                raise WeightsError(f"{rf.path}: HTTP {r.status_code} from {url}")
            if r.status_code == 206 and not r.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                part.unlink(missing_ok=True)
                raise _Retry(f"unexpected Content-Range {r.headers.get('Content-Range')!r}")
            resumed = r.status_code == 206
            if have and not resumed:  # the server ignored our Range: start over
                self.progress.grow(have)
            with open(part, "ab" if resumed else "wb") as f:
                _mark_synced(part, f.tell())
                try:
                    for chunk in r.iter_content(CHUNK):
                        f.write(chunk)
                        with self._lock:
                            self.fetched += len(chunk)
                        self.progress.add(len(chunk), rf.path)
                        if f.tell() > rf.size:
                            break  # a longer body than listed can only fail verification
                        if f.tell() % SYNC_EVERY < len(chunk):
                            _sync(f, part)
                finally:
                    _sync(f, part)


def _sync(f: Any, part: Path) -> None:
    f.flush()
    os.fsync(f.fileno())
    _mark_synced(part, f.tell())


class _Retry(Exception):
    """A transient download problem worth another ranged request."""


class _Pending(Exception):
    """A seed mirror serving a pull still under way does not have this file yet."""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def publish_current(base: Path, commit: str) -> bool:
    """Point `current` at commit atomically (symlink to a temp name, then rename). True if it moved."""
    link = base / "current"
    if link.is_symlink() and os.readlink(link) == commit:
        return False
    tmp = base / f".current.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(commit, tmp)
    os.replace(tmp, link)
    _fsync_dir(base)
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _settled(base: Path, repo_id: str, commit: str, allow: list[str] | None, ignore: list[str] | None) -> bool:
    """Published before with the same selection, every selected file verified and unchanged on disk.

    Then there is nothing to ask the hub: a pinned commit never changes.
    """
    manifest = read_manifest(base / commit)
    return bool(manifest and manifest.get("repo") == repo_id and manifest.get("allow") == (allow or None)
                and manifest.get("ignore") == (ignore or None)
                and manifest.get("selected") == [e["path"] for e in manifest["files"]]
                and verify(base / commit)["ok"])


def pull(repo_id: str, revision: str, root: str | os.PathLike[str], endpoint: str | None = None, *,
         token: str | None = None, allow: list[str] | None = None, ignore: list[str] | None = None,
         extra_bytes: int = 0, margin_gib: float = 10.0, workers: int = 4,
         log: TextIO = sys.stderr) -> dict[str, Any]:
    """Make `<root>/<org>--<name>/<commit>` hold verified files and point `current` at it.

    Returns {"changed", "commit", "bytes_fetched", "files", "bytes", "dir"}.
    """
    base = repo_base(root, repo_id)
    allow, ignore = allow or None, ignore or None
    if HEX40.match(revision) and _settled(base, repo_id, revision, allow, ignore):
        moved = publish_current(base, revision)
        return _result(moved, revision, 0, read_manifest(base / revision), base)
    commit, files = resolve(repo_id, revision, endpoint, token, allow, ignore)
    local_dir = base / commit
    work = plan_pull(local_dir, files, log)
    preflight(local_dir, work.bytes_to_fetch, extra_bytes, margin_gib)
    with _pull_lock(base, log) as waited:
        if waited:  # another pull just ran: start from what it left
            work = plan_pull(local_dir, files, log)
            preflight(local_dir, work.bytes_to_fetch, extra_bytes, margin_gib)
        progress = Progress(f"{repo_id}@{commit[:12]}", work.bytes_to_fetch, log)
        fetcher = Fetcher(repo_id, commit, endpoint, token, progress, log)
        if work.fetch:
            print(f"weights {repo_id}@{commit[:12]}: fetching {len(work.fetch)} of {len(files)} files, "
                  f"{_mib(work.bytes_to_fetch)} MiB ({sum(h for _, h in work.fetch)} bytes already in .part "
                  "files)", file=log, flush=True)
            work.verified += fetcher.fetch_all([rf for rf, _ in work.fetch], local_dir, workers)
            progress.line("done")
        new_manifest = {"repo": repo_id, "commit": commit, "endpoint": public_endpoint(endpoint),
                        "allow": allow, "ignore": ignore, "selected": [rf.path for rf in files],
                        "files": sorted(work.verified, key=lambda e: e["path"])}
        changed_manifest = _comparable(work.manifest) != _comparable(new_manifest)
        if changed_manifest:
            local_dir.mkdir(parents=True, exist_ok=True)
            write_manifest(local_dir, new_manifest)
            _fsync_dir(local_dir)
        moved = publish_current(base, commit)
    return _result(moved or changed_manifest or fetcher.fetched > 0, commit, fetcher.fetched, new_manifest, base)


def resolve(repo_id: str, revision: str, endpoint: str | None, token: str | None,
            allow: list[str] | None, ignore: list[str] | None) -> tuple[str, list[RemoteFile]]:
    """The commit a revision names and its selected files, from the hub's tree listing."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token or False, user_agent=USER_AGENT)
    commit = revision if HEX40.match(revision) else api.model_info(repo_id, revision=revision).sha
    files = list_remote(api, repo_id, commit, allow, ignore)
    if not files:
        raise WeightsError(f"{repo_id}@{commit}: no files match allow={allow} ignore={ignore}")
    return commit, files


def plan(repo_id: str, revision: str, root: str | os.PathLike[str], endpoint: str | None = None, *,
         token: str | None = None, allow: list[str] | None = None, ignore: list[str] | None = None,
         extra_bytes: int = 0, margin_gib: float = 10.0, log: TextIO = sys.stderr) -> dict[str, Any]:
    """What a pull would do, without writing anything: files, bytes to fetch, and whether they fit."""
    allow, ignore = allow or None, ignore or None
    commit, files = resolve(repo_id, revision, endpoint, token, allow, ignore)
    local_dir = repo_base(root, repo_id) / commit
    p = plan_pull(local_dir, files, log)
    return {"repo": repo_id, "commit": commit, "dir": str(local_dir), "files": len(files),
            "bytes": sum(rf.size for rf in files), "files_to_fetch": len(p.fetch),
            "bytes_in_parts": sum(have for _, have in p.fetch),
            **disk_check(local_dir, p.bytes_to_fetch, extra_bytes, margin_gib)}


@contextmanager
def _pull_lock(base: Path, log: TextIO) -> Iterator[bool]:
    """One pull per repo on a host at a time (a converge and a timer may overlap); yields True if it waited."""
    base.mkdir(parents=True, exist_ok=True)
    fd = os.open(base / ".pull.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = False
        except BlockingIOError:
            print(f"weights: another pull holds {base / '.pull.lock'}; waiting", file=log, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
            waited = True
        yield waited
    finally:
        os.close(fd)


def _comparable(manifest: dict[str, Any] | None) -> Any:
    if manifest is None:
        return None
    files = [{k: v for k, v in e.items() if k != "verified_at"} for e in manifest.get("files", [])]
    return {**{k: v for k, v in manifest.items() if k != "files"}, "files": files}


def _result(changed: bool, commit: str, fetched: int, manifest: dict[str, Any] | None, base: Path) -> dict[str, Any]:
    files = (manifest or {}).get("files", [])
    return {"changed": changed, "commit": commit, "bytes_fetched": fetched, "files": len(files),
            "bytes": sum(e["size"] for e in files), "dir": str(base / commit)}


# --------------------------------------------------------------------------- CLI

def read_token_file(path: str) -> str:
    """The hub token from a file only the service user can read (never argv or env)."""
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise WeightsError(f"token file {path} has mode {mode:o}; it must not be readable by group or others "
                           "(chmod 600)")
    token = Path(path).read_text().strip()
    if not token:
        raise WeightsError(f"token file {path} is empty")
    return token


def _scrub(text: str, secrets: Iterable[str | None]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def _cmd_pull(args: argparse.Namespace) -> dict[str, Any]:
    token = read_token_file(args.token_file) if args.token_file else None
    args.secrets.append(token)
    return pull(args.repo, args.revision, args.root, args.endpoint, token=token, allow=args.allow,
                ignore=args.ignore, extra_bytes=args.extra_bytes, margin_gib=args.margin_gib,
                workers=args.workers)


def _cmd_plan(args: argparse.Namespace) -> dict[str, Any]:
    token = read_token_file(args.token_file) if args.token_file else None
    args.secrets.append(token)
    return plan(args.repo, args.revision, args.root, args.endpoint, token=token, allow=args.allow,
                ignore=args.ignore, extra_bytes=args.extra_bytes, margin_gib=args.margin_gib)


def _cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    return verify(args.dir, full=args.full)


def _cmd_status(args: argparse.Namespace) -> dict[str, Any]:
    return status(args.root, args.repo)


def _repo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", required=True, help="org/name")
    p.add_argument("--revision", required=True, help="40-hex commit (a branch is resolved once)")
    p.add_argument("--root", required=True, help="models root, e.g. /srv/models")
    p.add_argument("--endpoint", help="Hub or mirror URL (default: HF_ENDPOINT or the Hub)")
    p.add_argument("--token-file", help="file holding the hub token (mode 0600)")
    p.add_argument("--allow", nargs="*", default=None, metavar="PAT", help="only files matching these globs")
    p.add_argument("--ignore", nargs="*", default=None, metavar="PAT", help="skip files matching these globs")
    p.add_argument("--extra-bytes", type=int, default=0, help="more disk needed later (e.g. quantized output)")
    p.add_argument("--margin-gib", type=float, default=10.0, help="free space to leave on the filesystem")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m r1deploy.weights", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("pull", help="download, verify and publish a repo revision")
    _repo_args(pl)
    pl.add_argument("--workers", type=int, default=4, help="files downloaded in parallel")
    pl.set_defaults(func=_cmd_pull)
    pn = sub.add_parser("plan", help="JSON: what a pull would fetch and whether it fits on disk (writes nothing)")
    _repo_args(pn)
    pn.set_defaults(func=_cmd_plan)
    v = sub.add_parser("verify", help="check a pulled directory against its manifest")
    v.add_argument("--dir", required=True)
    v.add_argument("--full", action="store_true", help="rehash every file instead of size+mtime")
    v.set_defaults(func=_cmd_verify)
    s = sub.add_parser("status", help="JSON: what current points to and whether it checks out")
    s.add_argument("--root", required=True)
    s.add_argument("--repo", required=True)
    s.set_defaults(func=_cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.secrets = []
    try:
        result = args.func(args)
    except Exception as exc:  # one JSON line for the caller, one readable line for the operator
        message = _scrub(f"{type(exc).__name__}: {exc}", args.secrets)
        print(f"error: {message}", file=sys.stderr)
        print(json.dumps({"changed": False, "error": message}))
        return getattr(exc, "exit_code", 1)
    print(json.dumps(result, sort_keys=True))
    if args.command == "verify" and not result["ok"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
