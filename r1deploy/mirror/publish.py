"""Publish a directory (or a weights-agent pull) as an immutable commit of a repo."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from r1deploy.guard import Refused, check_listing, contained
from r1deploy.mirror.index import (
    HEX40,
    NAME,
    PULL_MANIFEST,
    Entry,
    build_index,
    commit_id,
    hash_file,
    write_index,
    write_json_atomic,
)


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
    repo_dir = repo_path(Path(root), repo_id)
    commit_dir = repo_dir / "commits" / commit
    if not commit_dir.is_dir():
        staging = Path(tempfile.mkdtemp(dir=_mkdir(repo_dir / "commits"), prefix=".staging-"))
        for e in entries:
            _link_or_copy(src / e.path, staging / e.path)
        os.replace(staging, commit_dir)
    write_index(repo_dir, commit, entries)
    refs = read_refs(repo_dir)
    refs[branch] = commit
    write_json_atomic(repo_dir / "refs.json", refs)
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
    check_listing([f["path"] for f in manifest["files"]], f"the manifest of {src}")
    entries = []
    for f in manifest["files"]:
        st = contained(src, f["path"]).stat()
        if (st.st_size, st.st_mtime_ns) != (f["size"], f["mtime_ns"]):
            raise ValueError(f"{src / f['path']} changed since it was verified; run the weights agent again")
        if "sha256" in f:
            entries.append(Entry(f["path"], f["size"], f["sha256"], "", True))
        else:
            sha256, sha1, size = hash_file(src / f["path"])
            entries.append(Entry(f["path"], size, sha256, sha1, False))
    if not HEX40.match(str(manifest.get("commit"))):  # it names the commit directory a seed serves
        raise Refused(f"the manifest of {src} names commit {manifest.get('commit')!r}, not 40 hex digits")
    return manifest["repo"], manifest["commit"], entries


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_path(root: Path, repo_id: str) -> Path:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(NAME.match(p) and ".." not in p for p in parts):
        raise ValueError(f"{repo_id!r} is not an 'org/name' repo id")
    return root / parts[0] / parts[1]


def read_refs(repo_dir: Path) -> dict[str, str]:
    try:
        return json.loads((repo_dir / "refs.json").read_text())
    except FileNotFoundError:
        return {}
