"""A pull: list the pinned commit, plan against the disk, fetch, verify, publish `current`."""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from r1deploy.guard import Refused, check_listing
from r1deploy.weights.errors import DiskSpaceError, UnsafeListingError, WeightsError
from r1deploy.weights.fetch import USER_AGENT, Fetcher, Progress, destination, mib, part_path, resume_point
from r1deploy.weights.manifest import (
    HEX40,
    MANIFEST,
    RemoteFile,
    check_entry,
    digest,
    entry_expected,
    manifest_entry,
    public_endpoint,
    read_manifest,
    repo_base,
    verify,
    write_manifest,
)

GIB = 1024**3


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
    source = f"the tree of {repo_id}@{commit} from {public_endpoint(api.endpoint)}"
    try:  # every listed path, selected or not: a listing that names one unsafe path is not trusted
        check_listing([f.path for f in files], source)
    except Refused as exc:
        raise UnsafeListingError(f"{exc}; nothing was written") from None
    if MANIFEST in (f.path for f in files):
        raise UnsafeListingError(f"{source} lists {MANIFEST!r}, the agent's own manifest; refusing the listing")
    chosen = filter_repo_objects(files, allow_patterns=allow or None, ignore_patterns=ignore or None,
                                 key=lambda f: f.path)
    return sorted((RemoteFile.from_hub(f) for f in chosen), key=lambda rf: rf.path)


def plan_pull(local_dir: Path, files: list[RemoteFile], log: TextIO) -> Plan:
    """Decide per file: already verified (manifest size+mtime, or a rehash), or fetch (resuming a .part).

    Changes nothing on disk: a bad file is replaced only when its verified successor is renamed over it.
    """
    manifest = read_manifest(local_dir) if local_dir.is_dir() else None
    known = {e["path"]: e for e in (manifest or {}).get("files", [])}
    plan = Plan(manifest, [], [])
    for rf in files:
        target = destination(local_dir, rf.path)
        entry = known.get(rf.path)
        if entry and entry_expected(entry) == (rf.algo, rf.expected) and not check_entry(local_dir, entry, False):
            plan.verified.append(entry)
            continue
        if target.is_file():
            if target.stat().st_size == rf.size and digest(target, rf.algo) == rf.expected:
                plan.verified.append(manifest_entry(target, rf))
                continue
            print(f"weights: {rf.path} on disk does not match {rf.algo} {rf.expected[:12]}; re-fetching",
                  file=log, flush=True)
        have = resume_point(part_path(target))
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
                  f"{mib(work.bytes_to_fetch)} MiB ({sum(h for _, h in work.fetch)} bytes already in .part "
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
    if not HEX40.match(commit or ""):  # it names the directory the files go to
        raise UnsafeListingError(f"{public_endpoint(endpoint) or 'the hub'} answered revision {revision!r} "
                                 f"with commit {commit!r}, not 40 hex digits; nothing was written")
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
