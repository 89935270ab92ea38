"""The agent writes only under its model directory, and sends a seed the seed's token, never the hub's.

Hostile listings come from a real server on loopback (listinghub); the seeds are r1deploy's own
mirror. Every refusal is checked on the filesystem: nothing outside, no manifest, non-zero exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hubmirror import REPO_ROOT, hub_env, mirror_factory, tiny_model  # noqa: F401
from listinghub import COMMIT, ListingHub

from r1deploy.mirror import MirrorHandler, publish, serve

REPO = "lab/tiny-r1"
SEED_TOKEN = "r1-seed-token-test-0d5e3f"
HUB_TOKEN = "hf_hub_token_never_to_a_seed_91c4"


def agent(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "r1deploy.weights", "pull", "--repo", REPO, "--root", str(tmp_path / "node" / "models"),
           "--margin-gib", "0", *args]
    return subprocess.run(cmd, env=env or hub_env("http://127.0.0.1:9", tmp_path / "hf"), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def secret(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Where a traversal would land: tmp_path/node/models/<org>--<name>/<commit>/../../../ is tmp_path/node."""
    return tmp_path / "node"


BAD_PATHS = ["../../x.json", "../../../escaped.json", "sub/../../../../escaped.json", "a\\..\\..\\x.json",
             "ok/\x00.json", "new\nline.json", "./config.json", "a//b.json"]


@pytest.mark.parametrize("bad", BAD_PATHS + ["ABSOLUTE"])
def test_hub_listing_with_an_unsafe_path_writes_nothing(tmp_path, outside, bad):
    bad = str(tmp_path / "abs-target" / "x.json") if bad == "ABSOLUTE" else bad
    hub = ListingHub({"config.json": b"{}\n", bad: b'{"pwned": true}\n'})
    try:
        r = agent(tmp_path, "--revision", COMMIT, "--endpoint", hub.url)
    finally:
        hub.stop()
    assert r.returncode == 5, r.stderr
    assert repr(bad) in r.stderr and "refusing the listing" in r.stderr and "nothing was written" in r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["changed"] is False
    assert files_under(outside) == set() and not (tmp_path / "abs-target").exists()  # not even the root
    assert not [s for s in hub.seen if "/resolve/" in s["path"]]  # no byte was asked for


def test_seed_listing_with_an_absolute_path_writes_nothing(tmp_path, outside):
    target = tmp_path / "etc" / "cron.d" / "x"
    seed = ListingHub({"config.json": b"{}\n", str(target): b"* * * * * root sh\n"}, token=SEED_TOKEN)
    try:
        r = agent(tmp_path, "--revision", COMMIT, "--seed", seed.url, "--seed-token-file",
                  str(secret(tmp_path, "seed-token", SEED_TOKEN)))
    finally:
        seed.stop()
    assert r.returncode == 5 and str(target) in r.stderr, r.stderr
    assert not target.parent.exists() and files_under(outside) == set()


def test_a_branch_answered_with_a_non_commit_is_refused(tmp_path, outside):
    hub = ListingHub({"config.json": b"{}\n"}, commit="../../../elsewhere")  # the revision endpoint's "sha"
    try:
        r = agent(tmp_path, "--revision", "main", "--endpoint", hub.url)
    finally:
        hub.stop()
    assert r.returncode == 5 and "not 40 hex digits" in r.stderr, r.stderr
    assert files_under(outside) == set() and not (tmp_path / "elsewhere").exists()


def test_a_symlink_in_the_model_dir_that_leads_out_is_refused(tmp_path, tiny_model, mirror_factory):  # noqa: F811
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_bytes((tiny_model / "config.json").read_bytes())
    (src / "sub" / "extra.json").write_text('{"x": 1}\n')
    commit = publish(src, tmp_path / "mirror", REPO)
    m = mirror_factory(tmp_path / "mirror")
    local = tmp_path / "node" / "models" / "lab--tiny-r1" / commit
    local.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (local / "sub").symlink_to(elsewhere)  # planted: sub/extra.json would be written into elsewhere/
    r = agent(tmp_path, "--revision", commit, "--endpoint", m.url)
    assert r.returncode == 5, r.stderr
    assert "sub/extra.json" in r.stderr and "outside" in r.stderr
    assert files_under(elsewhere) == set()
    assert not (local / ".r1deploy-manifest.json").exists() and not (local.parent / "current").exists()
    assert m.file_gets() == []


def test_pull_from_a_seed_sends_the_seed_token_and_never_the_hub_token(tmp_path, tiny_model):  # noqa: F811
    """The node has a hub token everywhere huggingface-hub would look (env, HF_HOME); the seed sees none of it."""
    root = tmp_path / "seed-root"
    commit = publish(tiny_model, root, REPO)
    seen: list[str | None] = []

    class Recording(MirrorHandler):  # the real handler; it only notes what each request carried
        def _authorize(self):
            seen.append(self.headers.get("Authorization"))
            super()._authorize()

    seed = serve(str(root), "127.0.0.1", 0, token=SEED_TOKEN)
    seed.RequestHandlerClass = Recording
    threading.Thread(target=seed.serve_forever, daemon=True).start()
    env = dict(hub_env(seed.url, tmp_path / "hf"), HF_TOKEN=HUB_TOKEN, HUGGING_FACE_HUB_TOKEN=HUB_TOKEN)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "token").write_text(HUB_TOKEN)
    try:
        both = agent(tmp_path, "--revision", commit, "--seed", seed.url, "--token-file",
                     str(secret(tmp_path, "hub-token", HUB_TOKEN)), env=env)
        assert both.returncode == 1 and "never sent to a seed" in both.stderr and seen == []
        no_token = agent(tmp_path, "--revision", commit, "--seed", seed.url, env=env)
        assert no_token.returncode != 0 and seen == [None]  # refused with 401, nothing written
        assert files_under(tmp_path / "node" / "models" / "lab--tiny-r1") <= {".pull.lock"}
        ok = agent(tmp_path, "--revision", commit, "--seed", seed.url, "--seed-token-file",
                   str(secret(tmp_path, "seed-token", SEED_TOKEN)), env=env)
    finally:
        seed.shutdown()
        seed.server_close()
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.splitlines()[-1])["files"] == 8
    assert len(seen) > 8 and set(seen[1:]) == {f"Bearer {SEED_TOKEN}"}
    assert not any(HUB_TOKEN in (h or "") for h in seen)
    assert SEED_TOKEN not in ok.stdout + ok.stderr + no_token.stdout + no_token.stderr


def test_seed_token_file_must_be_private(tmp_path):
    token = secret(tmp_path, "seed-token", SEED_TOKEN)
    os.chmod(token, 0o644)
    r = agent(tmp_path, "--revision", "0" * 40, "--seed", "http://127.0.0.1:9", "--seed-token-file", str(token))
    assert r.returncode == 1 and "chmod 600" in r.stderr and SEED_TOKEN not in r.stderr + r.stdout
