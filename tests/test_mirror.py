"""The mirror against the real huggingface-hub 2.4.0 client, over loopback."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

for _k, _v in {"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1"}.items():
    os.environ.setdefault(_k, _v)

from hubmirror import REPO_ROOT, hub_env, mirror_factory, tiny_model  # noqa: E402,F401
from huggingface_hub import HfApi, hf_hub_download  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    EntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from r1deploy import cli  # noqa: E402
from r1deploy.mirror import git_blob_sha1, publish  # noqa: E402

REPO = "lab/tiny-r1"
SHARD = "model-00001-of-00002.safetensors"


@pytest.fixture
def published(tmp_path: Path, tiny_model: Path) -> tuple[Path, str]:  # noqa: F811
    root = tmp_path / "mirror"
    return root, publish(tiny_model, root, REPO)


def _snapshot(endpoint: str, home: Path, revision: str, local_dir: Path) -> None:
    """snapshot_download in a fresh process: huggingface-hub reads HF_ENDPOINT at import."""
    code = ("import sys; from huggingface_hub import snapshot_download; "
            "print(snapshot_download(sys.argv[1], revision=sys.argv[2], local_dir=sys.argv[3]))")
    subprocess.run([sys.executable, "-c", code, REPO, revision, str(local_dir)],
                   env=hub_env(endpoint, home), check=True, capture_output=True, text=True)


def _same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir() if p.is_file())
    return names == sorted(p.name for p in b.iterdir() if p.is_file()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def test_snapshot_download_by_branch_and_by_commit(tmp_path, published, tiny_model, mirror_factory):  # noqa: F811
    root, commit = published
    m = mirror_factory(root)
    _snapshot(m.url, tmp_path / "hf", "main", tmp_path / "by-branch")
    _snapshot(m.url, tmp_path / "hf", commit, tmp_path / "by-sha")
    assert _same_files(tiny_model, tmp_path / "by-branch")
    assert _same_files(tiny_model, tmp_path / "by-sha")
    check = HfApi(endpoint=m.url, token=False).verify_repo_checksums(
        REPO, revision=commit, local_dir=tmp_path / "by-sha")
    assert check.checked_count == 8 and not check.mismatches


def test_model_info_and_tree_describe_the_commit(published, mirror_factory):  # noqa: F811
    root, commit = published
    m = mirror_factory(root)
    api = HfApi(endpoint=m.url, token=False)
    assert api.model_info(REPO).sha == commit
    siblings = {s.rfilename: s for s in api.model_info(REPO, files_metadata=True).siblings}
    assert siblings[SHARD].lfs is not None and siblings["config.json"].size > 0
    files = {f.path: f for f in api.list_repo_tree(REPO, revision=commit, recursive=True)}
    data = (root / REPO / "commits" / commit / SHARD).read_bytes()
    assert files[SHARD].lfs.sha256 == hashlib.sha256(data).hexdigest()
    assert files[SHARD].size == len(data)
    config = (root / REPO / "commits" / commit / "config.json").read_bytes()
    assert files["config.json"].lfs is None and files["config.json"].blob_id == git_blob_sha1(config)


def test_tree_pages_follow_link_header(tmp_path, published, mirror_factory):  # noqa: F811
    root, commit = published
    m = mirror_factory(root, "--page-size", "3")
    paths = [f.path for f in HfApi(endpoint=m.url, token=False).list_repo_tree(REPO, recursive=True)]
    assert len(paths) == 8 and len(set(paths)) == 8
    tree_calls = [r for r in m.requests() if "/tree/" in r["path"]]
    assert len(tree_calls) == 3


def test_nested_folders_listed_like_the_hub(tmp_path, mirror_factory):  # noqa: F811
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "top.txt").write_text("top")
    (src / "sub" / "a.txt").write_text("a")
    (src / "sub" / "deeper" / "b.txt").write_text("b")
    publish(src, tmp_path / "root", "org/nested")
    api = HfApi(endpoint=mirror_factory(tmp_path / "root").url, token=False)
    top = {(e.path, type(e).__name__) for e in api.list_repo_tree("org/nested")}
    assert top == {("top.txt", "RepoFile"), ("sub", "RepoFolder")}
    sub = {e.path for e in api.list_repo_tree("org/nested", path_in_repo="sub", recursive=True)}
    assert sub == {"sub/a.txt", "sub/deeper", "sub/deeper/b.txt"}


def test_errors_map_to_huggingface_hub_exceptions(tmp_path, published, mirror_factory):  # noqa: F811
    root, commit = published
    m = mirror_factory(root)
    api = HfApi(endpoint=m.url, token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("lab/nope")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="0" * 40)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.bin", revision=commit, endpoint=m.url, token=False,
                        cache_dir=tmp_path / "cache")


def test_head_and_range_requests(published, mirror_factory):  # noqa: F811
    root, commit = published
    m = mirror_factory(root)
    data = (root / REPO / "commits" / commit / SHARD).read_bytes()
    url = f"{m.url}/{REPO}/resolve/main/{SHARD}"
    head = requests.head(url)
    assert head.headers["X-Repo-Commit"] == commit
    assert head.headers["X-Linked-Etag"].strip('"') == hashlib.sha256(data).hexdigest()
    assert int(head.headers["X-Linked-Size"]) == len(data) == int(head.headers["Content-Length"])
    tail = requests.get(url, headers={"Range": "bytes=1000-"})
    assert tail.status_code == 206 and tail.content == data[1000:]
    assert tail.headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    middle = requests.get(url, headers={"Range": "bytes=10-19"})
    assert middle.status_code == 206 and middle.content == data[10:20]
    assert requests.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    small = requests.head(f"{m.url}/{REPO}/resolve/{commit}/config.json")
    config = (root / REPO / "commits" / commit / "config.json").read_bytes()
    assert small.headers["ETag"].strip('"') == git_blob_sha1(config)
    ranges = [(r["range"], r["status"], r["bytes"]) for r in m.requests() if r["method"] == "GET"]
    assert ranges == [("bytes=1000-", 206, len(data) - 1000), ("bytes=10-19", 206, 10),
                      (f"bytes={len(data)}-", 416, 0)]


def test_keep_alive_serves_many_requests_on_one_connection(published, mirror_factory):  # noqa: F811
    root, commit = published
    m = mirror_factory(root)
    conn = http.client.HTTPConnection(urlsplit(m.url).hostname, urlsplit(m.url).port)
    for name in ("config.json", SHARD, "tokenizer.json"):
        conn.request("GET", f"/{REPO}/resolve/{commit}/{name}")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == (root / REPO / "commits" / commit / name).read_bytes()
    conn.close()


@pytest.mark.parametrize("path", [
    "/lab/tiny-r1/resolve/main/../../../../etc/passwd",
    "/lab/tiny-r1/resolve/main/%2e%2e/%2e%2e/refs.json",
    "/lab/tiny-r1/resolve/main/..%2F..%2Frefs.json",
    "/lab/..%2F..%2Fetc/resolve/main/passwd",
])
def test_path_traversal_refused(published, mirror_factory, path):  # noqa: F811
    m = mirror_factory(published[0])
    conn = http.client.HTTPConnection(urlsplit(m.url).hostname, urlsplit(m.url).port)
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.status in (400, 404) and b"root:" not in resp.read()


def test_publish_is_deterministic_and_moves_the_branch(tmp_path, tiny_model):  # noqa: F811
    first = publish(tiny_model, tmp_path / "a", REPO)
    assert publish(tiny_model, tmp_path / "b", REPO) == first
    changed = tmp_path / "changed"
    changed.mkdir()
    for f in tiny_model.iterdir():
        (changed / f.name).write_bytes(f.read_bytes())
    (changed / "generation_config.json").write_text("{}\n")
    second = publish(changed, tmp_path / "a", REPO)
    assert second != first
    refs = json.loads((tmp_path / "a" / REPO / "refs.json").read_text())
    assert refs == {"main": second}
    assert (tmp_path / "a" / REPO / "commits" / first).is_dir()  # old commits stay servable


def test_commit_dropped_in_by_hand_is_indexed_once(tmp_path, mirror_factory):  # noqa: F811
    commit = "ab" * 20
    files = tmp_path / "root" / "org" / "manual" / "commits" / commit
    files.mkdir(parents=True)
    (files / "weights.bin").write_bytes(os.urandom(4096))
    m = mirror_factory(tmp_path / "root")
    head = requests.head(f"{m.url}/org/manual/resolve/{commit}/weights.bin")
    assert head.status_code == 200
    assert (tmp_path / "root" / "org" / "manual" / "index" / f"{commit}.json").is_file()


def test_token_required_and_never_logged(tmp_path, published, mirror_factory):  # noqa: F811
    token = "hf_mirror_secret_value_123"
    token_file = tmp_path / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    m = mirror_factory(published[0], "--token-file", str(token_file))
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=m.url, token=False).model_info(REPO)
    assert HfApi(endpoint=m.url, token=token).model_info(REPO).sha == published[1]
    assert [r["auth"] for r in m.requests()] == [False, True]
    assert token not in m.log.read_text()


def test_cli_publish(tmp_path, tiny_model, capsys):  # noqa: F811
    assert cli.main(["mirror", "publish", str(tiny_model), "--root", str(tmp_path), "--repo", REPO]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["commit"] == publish(tiny_model, tmp_path / "again", REPO)
    assert (REPO_ROOT / "r1deploy" / "mirror" / "__main__.py").is_file()
