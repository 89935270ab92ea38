"""A seed serves its weights pull in place: after the pull (agent's hashes), and during it (live)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hubmirror import REPO_ROOT, hub_env, mirror_factory, tiny_model  # noqa: F401

from r1deploy.mirror import PULL_MANIFEST, publish

REPO = "lab/tiny-r1"


def pull(url: str, root: Path, commit: str, home: Path, popen: bool = False):
    cmd = [sys.executable, "-m", "r1deploy.weights", "pull", "--repo", REPO, "--revision", commit, "--root", str(root),
           "--endpoint", url, "--margin-gib", "0"]
    if popen:
        return subprocess.Popen(cmd, env=hub_env(url, home), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=hub_env(url, home), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture
def upstream(tmp_path: Path, tiny_model: Path, mirror_factory):  # noqa: F811
    root = tmp_path / "upstream"
    commit = publish(tiny_model, root, REPO)
    return mirror_factory(root), commit


def test_seed_serves_its_verified_pull_in_place(tmp_path, upstream, mirror_factory):  # noqa: F811
    up, commit = upstream
    seed_root = tmp_path / "seed"
    assert pull(up.url, seed_root, commit, tmp_path / "hf").returncode == 0
    seed_dir = seed_root / "lab--tiny-r1" / commit
    seed = mirror_factory(tmp_path / "empty", "--pulled", f"{REPO}={seed_dir}")
    node = pull(seed.url, tmp_path / "node", commit, tmp_path / "hf2")
    assert node.returncode == 0, node.stderr
    got = json.loads(node.stdout.splitlines()[-1])
    assert got["commit"] == commit and got["bytes_fetched"] > 0
    assert {r["path"].rsplit("/", 1)[-1] for r in seed.file_gets()} >= {"model-00001-of-00002.safetensors"}
    assert not (seed_dir.parent.parent / ".mirror").exists()  # no copies, no hard links: served in place


def test_other_nodes_pull_while_the_seed_still_pulls(tmp_path, upstream, mirror_factory):  # noqa: F811
    up, commit = upstream
    seed_dir = tmp_path / "seed" / "lab--tiny-r1" / commit
    seed_dir.mkdir(parents=True)
    seed = mirror_factory(tmp_path / "empty", "--pulled", f"{REPO}={seed_dir}", "--upstream", up.url,
                          "--pending-wait", "20")
    node = pull(seed.url, tmp_path / "node", commit, tmp_path / "hf2", popen=True)
    time.sleep(2)  # the node has the listing (from upstream) and waits on the files
    assert node.poll() is None
    src = tmp_path / "upstream" / "lab" / "tiny-r1" / "commits" / commit
    for f in sorted(src.iterdir()):  # what the seed's agent does: verified files appear one by one
        shutil.copy2(f, seed_dir / f".{f.name}.tmp")
        (seed_dir / f".{f.name}.tmp").rename(seed_dir / f.name)
        time.sleep(0.3)
    out, err = node.communicate(timeout=120)
    assert node.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["commit"] == commit
    assert not (seed_dir / PULL_MANIFEST).exists()  # served before the seed's pull even finished


def test_pulled_spec_must_name_a_commit_dir(tmp_path):
    r = subprocess.run([sys.executable, "-m", "r1deploy.mirror", "serve", "--root", str(tmp_path), "--port", "0",
                        "--pulled", f"{REPO}={tmp_path}/main"], cwd=REPO_ROOT, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and "40-hex commit" in r.stderr
