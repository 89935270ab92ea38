"""The mirror serves only under its root (published or a pull in place) and, as a seed, only with the token."""

from __future__ import annotations

import http.client
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hubmirror import REPO_ROOT, hub_env, mirror_factory, start_mirror, tiny_model  # noqa: F401
from listinghub import ListingHub

from r1deploy import weights
from r1deploy.mirror import PULL_MANIFEST, publish

REPO = "lab/tiny-r1"
SECRET = b"root:x:0:0:SECRET-OUTSIDE-THE-ROOT"
TOKEN = "r1-seed-token-mirror-test-55aa"


def get(url: str, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


@pytest.fixture
def secret_outside(tmp_path: Path) -> Path:
    """A file next to every root, where `..` from a served directory would reach."""
    for where in (tmp_path / "passwd", tmp_path / "seed" / "passwd", tmp_path / "seed" / "lab--tiny-r1" / "passwd"):
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_bytes(SECRET)
    return tmp_path / "passwd"


@pytest.fixture
def published(tmp_path: Path, tiny_model: Path) -> tuple[Path, str]:  # noqa: F811
    root = tmp_path / "mirror"
    return root, publish(tiny_model, root, REPO)


@pytest.fixture
def pulled(tmp_path: Path, published, mirror_factory) -> tuple[Path, str]:  # noqa: F811
    """A seed's finished pull (the agent's own, with its manifest), to serve in place."""
    root, commit = published
    weights.pull(REPO, commit, tmp_path / "seed", mirror_factory(root).url, margin_gib=0, log=io.StringIO())
    return tmp_path / "seed" / "lab--tiny-r1" / commit, commit


def token_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "seed-token"
    path.write_text(TOKEN + "\n")
    path.chmod(mode)
    return path


TRAVERSALS = [
    "/lab/tiny-r1/resolve/main/../../passwd",
    "/lab/tiny-r1/resolve/main/%2e%2e/%2e%2e/%2e%2e/passwd",
    "/lab/tiny-r1/resolve/main/..%2F..%2F..%2Fpasswd",
    "/lab/tiny-r1/resolve/main/%2E%2E%5C%2E%2E%5Cpasswd",
    "/lab/tiny-r1/resolve/main//{outside}",
    "/lab/tiny-r1/resolve/main/%2F{outside_quoted}",
    "/lab/tiny-r1/resolve/main/config.json%00/../../passwd",
    "/api/models/lab/tiny-r1/tree/main/..%2F..",
    "/lab/%2e%2e/resolve/main/passwd",
]


@pytest.mark.parametrize("mode", ["root", "pulled"])
@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_requests_are_refused(request, tmp_path, published, secret_outside, mirror_factory, mode, path):  # noqa: F811
    if mode == "root":
        m = mirror_factory(published[0])
    else:
        m = mirror_factory(tmp_path / "empty", "--pulled", f"{REPO}={request.getfixturevalue('pulled')[0]}")
    path = path.format(outside=secret_outside, outside_quoted=str(secret_outside).replace("/", "%2F"))
    status, body = get(m.url, path)
    assert status in (400, 404), (status, body)
    assert b"SECRET" not in body
    assert get(m.url, f"/{REPO}/resolve/main/config.json")[0] == 200  # the same mirror still serves


def test_published_file_swapped_for_a_symlink_out_is_not_served(tmp_path, published, secret_outside, mirror_factory):  # noqa: F811
    root, commit = published
    served = root / REPO / "commits" / commit / "config.json"
    served.unlink()
    served.symlink_to(secret_outside)
    m = mirror_factory(root)
    status, body = get(m.url, f"/{REPO}/resolve/{commit}/config.json")
    assert status == 404 and b"SECRET" not in body
    assert b"not under the served directory" in body


def test_pipelined_seed_does_not_serve_a_symlink_out(tmp_path, published, secret_outside, mirror_factory):  # noqa: F811
    root, commit = published
    upstream = mirror_factory(root)
    seed_dir = tmp_path / "seed" / "lab--tiny-r1" / commit  # a pull under way: listed from upstream
    seed_dir.mkdir(parents=True)
    (seed_dir / "config.json").symlink_to(secret_outside)
    m = mirror_factory(tmp_path / "empty", "--pulled", f"{REPO}={seed_dir}", "--upstream", upstream.url,
                       "--pending-wait", "0.2")
    status, body = get(m.url, f"/{REPO}/resolve/{commit}/config.json")
    assert status == 404 and b"SECRET" not in body


def test_finished_pull_with_a_symlink_out_is_not_served(tmp_path, pulled, secret_outside, mirror_factory):  # noqa: F811
    seed_dir, commit = pulled
    (seed_dir / "config.json").unlink()
    (seed_dir / "config.json").symlink_to(secret_outside)
    m = mirror_factory(tmp_path / "empty", "--pulled", f"{REPO}={seed_dir}")
    status, body = get(m.url, f"/{REPO}/resolve/{commit}/config.json")
    assert status >= 400 and b"SECRET" not in body and b"outside" in body


def test_upstream_listing_with_traversal_is_refused_and_the_node_writes_nothing(tmp_path, mirror_factory):  # noqa: F811
    upstream = ListingHub({"config.json": b"{}\n", "../../../../escaped.json": b"{}\n"})
    commit = "c0ffee" + "0" * 34
    seed_dir = tmp_path / "seed" / "lab--tiny-r1" / commit
    seed_dir.mkdir(parents=True)
    try:
        m = mirror_factory(tmp_path / "empty", "--pulled", f"{REPO}={seed_dir}", "--upstream", upstream.url,
                           "--token-file", str(token_file(tmp_path)))
        status, body = get(m.url, f"/api/models/{REPO}/tree/{commit}?recursive=true",
                           {"Authorization": f"Bearer {TOKEN}"})
        node = subprocess.run([sys.executable, "-m", "r1deploy.weights", "pull", "--repo", REPO, "--revision", commit,
                               "--root", str(tmp_path / "node" / "models"), "--margin-gib", "0", "--seed", m.url,
                               "--seed-token-file", str(token_file(tmp_path))],
                              env=hub_env(m.url, tmp_path / "hf"), cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=120)
    finally:
        upstream.stop()
    assert status == 502 and b"escaped.json" in body
    assert node.returncode != 0 and "escaped.json" in node.stderr
    assert not list((tmp_path / "node").rglob("*.json")) and not list(tmp_path.rglob("escaped.json*"))


def test_upstream_token_never_follows_a_next_page_to_another_host(tmp_path, mirror_factory):  # noqa: F811
    elsewhere = ListingHub({})  # a different origin (port) on loopback: it must see no request at all
    upstream = ListingHub({"config.json": b"{}\n"}, next_page=f"{elsewhere.url}/api/models/{REPO}/tree/x?cursor=1")
    commit = "c0ffee" + "0" * 34
    seed_dir = tmp_path / "seed" / "lab--tiny-r1" / commit
    seed_dir.mkdir(parents=True)
    hub_token = tmp_path / "hub-token"
    hub_token.write_text("hf_upstream_only\n")
    hub_token.chmod(0o600)
    try:
        m = mirror_factory(tmp_path / "empty", "--pulled", f"{REPO}={seed_dir}", "--upstream", upstream.url,
                           "--upstream-token-file", str(hub_token))
        status, body = get(m.url, f"/api/models/{REPO}/tree/{commit}?recursive=true")
    finally:
        upstream.stop()
        elsewhere.stop()
    assert status == 502 and b"next page" in body
    assert elsewhere.seen == [] and upstream.seen[0]["Authorization"] == "Bearer hf_upstream_only"


def test_publish_refuses_a_tree_with_a_symlink_out(tmp_path, tiny_model, secret_outside):  # noqa: F811
    src = tmp_path / "src"
    shutil.copytree(tiny_model, src)
    (src / "extra.json").symlink_to(secret_outside)
    r = subprocess.run([sys.executable, "-m", "r1deploy", "mirror", "publish", str(src), "--root", str(tmp_path / "root"),
                        "--repo", REPO], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "extra.json" in r.stderr and "outside" in r.stderr, r.stderr
    assert not (tmp_path / "root").exists()
    (src / "extra.json").unlink()
    (src / "sub").symlink_to(tmp_path, target_is_directory=True)  # a folder out of the tree, too
    with pytest.raises(ValueError, match="sub"):
        publish(src, tmp_path / "root", REPO)
    (src / "sub").unlink()
    (src / "inner.json").symlink_to(src / "config.json")  # inside the tree: skipped, as before
    assert publish(src, tmp_path / "root", REPO) == publish(tiny_model, tmp_path / "again", REPO)


def test_publish_refuses_a_pulled_manifest_naming_a_path_out(tmp_path, pulled):
    seed_dir, _ = pulled
    manifest = json.loads((seed_dir / PULL_MANIFEST).read_text())
    manifest["files"][0]["path"] = "../../../passwd"
    (seed_dir / PULL_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"'\.\./\.\./\.\./passwd'.*'\.\.' component"):
        publish(seed_dir, tmp_path / "root")
    assert not (tmp_path / "root").exists()


def test_seed_requires_the_fleet_token(tmp_path, pulled, mirror_factory):  # noqa: F811
    seed_dir, commit = pulled
    m = mirror_factory(tmp_path / "empty", "--pulled", f"{REPO}={seed_dir}", "--token-file", str(token_file(tmp_path)))
    url = f"/{REPO}/resolve/{commit}/config.json"
    assert get(m.url, url)[0] == 401
    assert get(m.url, url, {"Authorization": "Bearer wrong"})[0] == 401
    assert get(m.url, url, {"Authorization": f"Bearer {TOKEN}x"})[0] == 401
    assert get(m.url, f"/api/models/{REPO}/tree/{commit}")[0] == 401  # listings too
    status, body = get(m.url, url, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and body == (seed_dir / "config.json").read_bytes()
    assert TOKEN not in m.log.read_text()
    if shutil.which("curl"):  # the unit's ExecStartPost probe: any answer (a 401 here) means up
        probe = subprocess.run(["curl", "-s", "-o", "/dev/null", f"{m.url}/"], timeout=30)
        assert probe.returncode == 0


def test_mirror_will_not_start_with_a_readable_token_file(tmp_path):
    with pytest.raises(RuntimeError, match="did not start"):
        start_mirror(tmp_path, tmp_path / "log", "--token-file", str(token_file(tmp_path, 0o644)))
    r = subprocess.run([sys.executable, "-m", "r1deploy.mirror", "serve", "--root", str(tmp_path), "--port", "0",
                        "--token-file", str(token_file(tmp_path, 0o644))], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and "chmod 600" in r.stderr and TOKEN not in r.stderr
