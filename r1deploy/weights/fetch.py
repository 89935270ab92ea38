"""Ranged downloads into .part files that continue from the bytes on disk, with progress lines."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TextIO

from r1deploy.guard import Refused, contained
from r1deploy.weights.errors import IntegrityError, UnsafeListingError, WeightsError
from r1deploy.weights.manifest import CHUNK, RemoteFile, digest, manifest_entry, public_endpoint

SYNC_EVERY = 64 * CHUNK  # bytes of a .part that a reboot may cost at most

PROGRESS_EVERY_S = 2.0
RETRIES = 5  # transient network errors per file, counted since the last byte received
PENDING_MAX_S = 4 * 3600  # how long a file may stay "Pending" at a pipelined seed (its own upstream pull)
USER_AGENT = "r1deploy-weights"


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
        print(f"weights {self.label}: {mib(self.done)}/{mib(self.total)} MiB ({pct:.0f}%) "
              f"{mib(rate)} MiB/s ETA {eta} {current}".rstrip(), file=self.out, flush=True)


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def destination(local_dir: Path, rel: str) -> Path:
    """Where a listed file goes; refused if a symlink on the way (or a planted .part) leads out of local_dir."""
    try:
        for scratch in (".part", ".part.tmp"):  # written through, unlike the renamed-over target
            contained(local_dir, rel + scratch)
        return contained(local_dir, rel)
    except Refused as exc:
        raise UnsafeListingError(f"{exc}; nothing was written") from None


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
            targets = [destination(local_dir, rf.path) for rf in todo]  # all checked before any is written
            futures = [pool.submit(self.fetch, rf, target) for rf, target in zip(todo, targets, strict=True)]
            wait(futures)
        errors = [f.exception() for f in futures if f.exception()]
        if errors:
            raise errors[0]
        return [f.result() for f in futures]

    def fetch(self, rf: RemoteFile, target: Path) -> dict[str, Any]:
        part = part_path(target)
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
