"""The weights agent against a real mirror on loopback: resume, integrity, preflight, secrets."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hubmirror import REPO_ROOT, hub_env, mirror_factory, tiny_model  # noqa: F401

from r1deploy import weights
from r1deploy.mirror import publish

REPO = "lab/tiny-r1"
SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"
TOKEN = "hf_r1deploy_test_secret_4f9c2a"


@pytest.fixture
def hub(tmp_path: Path, tiny_model: Path):  # noqa: F811
    """A published copy of the tiny model (copied, not linked: tests corrupt mirror files)."""
    src = tmp_path / "src"
    src.mkdir()
    for f in tiny_model.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    root = tmp_path / "mirror"
    return root, publish(src, root, REPO), src


def agent(*args: str, env_home: Path, endpoint: str | None = None, popen: bool = False, **kw):
    cmd = [sys.executable, "-m", "r1deploy.weights", *args]
    env = hub_env(endpoint or "http://127.0.0.1:9", env_home)
    if popen:
        return subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **kw)
    return subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, **kw)


def pull(m, tmp_path: Path, revision: str, *extra: str, popen: bool = False):
    return agent("pull", "--repo", REPO, "--revision", revision, "--root", str(tmp_path / "models"),
                 "--endpoint", m.url, "--margin-gib", "0", *extra, env_home=tmp_path / "hf",
                 endpoint=m.url, popen=popen)


def result(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def model_dir(tmp_path: Path, commit: str) -> Path:
    return tmp_path / "models" / "lab--tiny-r1" / commit


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def part_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def flip_byte(path: Path, offset: int, keep_mtime: bool) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:  # silent bit rot: size and mtime unchanged
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_fresh_pull_then_no_op(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, src = hub
    m = mirror_factory(root)
    first = pull(m, tmp_path, commit)
    assert first.returncode == 0, first.stderr
    out = result(first)
    total = sum(f.stat().st_size for f in src.iterdir())
    assert out == {"changed": True, "commit": commit, "bytes_fetched": total, "files": 8, "bytes": total,
                   "dir": str(model_dir(tmp_path, commit))}
    local = model_dir(tmp_path, commit)
    assert all((local / f.name).read_bytes() == f.read_bytes() for f in src.iterdir())
    assert os.readlink(tmp_path / "models" / "lab--tiny-r1" / "current") == commit
    manifest = json.loads((local / ".r1deploy-manifest.json").read_text())
    by_path = {e["path"]: e for e in manifest["files"]}
    assert "sha256" in by_path[SHARD1] and "sha1" in by_path["config.json"]
    assert manifest["repo"] == REPO and manifest["commit"] == commit and manifest["endpoint"] == m.url

    seen = len(m.requests())
    again = pull(m, tmp_path, commit)
    assert result(again) == dict(out, changed=False, bytes_fetched=0)
    assert len(m.requests()) == seen  # pinned and verified: not even a listing
    by_branch = pull(m, tmp_path, "main")
    assert result(by_branch)["changed"] is False and result(by_branch)["commit"] == commit
    assert m.file_gets() == m.file_gets()[:8]  # only the first pull fetched files


def test_resume_after_kill_fetches_only_missing_bytes(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, src = hub
    slow = mirror_factory(root, "--max-rate", "200000")  # slow enough to kill mid-shard
    part = model_dir(tmp_path, commit) / (SHARD1 + ".part")
    proc = pull(slow, tmp_path, commit, popen=True)
    wait_for(lambda: part_size(part) >= 250_000)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    kept = part_size(part)
    size = (src / SHARD1).stat().st_size
    assert 0 < kept < size

    fast = mirror_factory(root)  # same repo, its own access log
    done = pull(fast, tmp_path, commit)
    assert done.returncode == 0, done.stderr
    assert result(done)["bytes_fetched"] <= sum(f.stat().st_size for f in src.iterdir()) - kept
    gets = slow.file_gets(SHARD1) + fast.file_gets(SHARD1)
    assert [g["range"] for g in gets] == [None, f"bytes={kept}-"]
    assert gets[1]["status"] == 206 and gets[1]["bytes"] == size - kept
    assert sum(g["bytes"] for g in gets) < size * 1.1  # not 2x the shard
    assert (model_dir(tmp_path, commit) / SHARD1).read_bytes() == (src / SHARD1).read_bytes()
    assert not part.exists()


def test_after_a_reboot_resume_starts_at_the_last_synced_byte(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, src = hub
    m = mirror_factory(root)
    local = model_dir(tmp_path, commit)
    local.mkdir(parents=True)
    good = (src / SHARD1).read_bytes()[:400_000]
    # The page cache died with the old boot: bytes past the last fsync may be zeros on disk.
    (local / (SHARD1 + ".part")).write_bytes(good + b"\0" * 300_000)
    (local / (SHARD1 + ".part.json")).write_text(json.dumps({"boot_id": "a-previous-boot", "synced": 400_000}))

    done = pull(m, tmp_path, commit)
    assert done.returncode == 0, done.stderr
    assert [g["range"] for g in m.file_gets(SHARD1)] == ["bytes=400000-"]
    assert (local / SHARD1).read_bytes() == (src / SHARD1).read_bytes()
    assert not (local / (SHARD1 + ".part.json")).exists()


def test_dropped_connection_resumes_within_the_same_run(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, src = hub
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    first = mirror_factory(root, "--max-rate", "200000", "--port", port)
    part = model_dir(tmp_path, commit) / (SHARD1 + ".part")
    proc = pull(first, tmp_path, commit, popen=True)
    wait_for(lambda: part_size(part) >= 250_000)
    first.stop()  # the seed goes away mid-shard ...
    second = mirror_factory(root, "--port", port)  # ... and comes back
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "retrying from byte" in stderr
    resumed = second.file_gets(SHARD1)
    assert resumed and resumed[0]["range"].startswith("bytes=") and resumed[0]["range"] != "bytes=0-"
    assert (model_dir(tmp_path, commit) / SHARD1).read_bytes() == (src / SHARD1).read_bytes()


def test_flipped_byte_caught_by_full_verify_and_refetched(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, src = hub
    m = mirror_factory(root)
    assert pull(m, tmp_path, commit).returncode == 0
    local = model_dir(tmp_path, commit)
    flip_byte(local / SHARD2, 123_456, keep_mtime=True)

    cheap = agent("verify", "--dir", str(local), env_home=tmp_path / "hf")
    assert cheap.returncode == 0 and result(cheap)["ok"] is True  # size+mtime cannot see it
    full = agent("verify", "--dir", str(local), "--full", env_home=tmp_path / "hf")
    assert full.returncode == 1
    assert [p["path"] for p in result(full)["problems"]] == [SHARD2]
    assert "sha256 mismatch" in result(full)["problems"][0]["problem"]
    # Once a full check has found it, the cheap check (what a converge trusts) sees it too.
    again = agent("verify", "--dir", str(local), env_home=tmp_path / "hf")
    assert again.returncode == 1 and [p["path"] for p in result(again)["problems"]] == [SHARD2]

    repaired = pull(m, tmp_path, commit)
    assert repaired.returncode == 0, repaired.stderr
    assert result(repaired)["changed"] is True
    assert result(repaired)["bytes_fetched"] == (src / SHARD2).stat().st_size
    assert [g["range"] for g in m.file_gets(SHARD2)] == [None, None]
    assert (local / SHARD2).read_bytes() == (src / SHARD2).read_bytes()
    assert result(agent("verify", "--dir", str(local), "--full", env_home=tmp_path / "hf"))["ok"] is True


def test_modified_file_seen_by_cheap_check(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, src = hub
    m = mirror_factory(root)
    before = weights.status(tmp_path / "models", REPO)
    assert before["commit"] is None and before["verified"] is False
    assert pull(m, tmp_path, commit).returncode == 0
    local = model_dir(tmp_path, commit)
    flip_byte(local / "config.json", 5, keep_mtime=False)
    status = agent("status", "--root", str(tmp_path / "models"), "--repo", REPO, env_home=tmp_path / "hf")
    report = result(status)
    assert report["current"] == report["commit"] == commit and report["ok"] is report["verified"] is False
    assert report["problems"][0]["path"] == "config.json"
    assert pull(m, tmp_path, commit).returncode == 0
    assert (local / "config.json").read_bytes() == (src / "config.json").read_bytes()
    assert result(agent("status", "--root", str(tmp_path / "models"), "--repo", REPO,
                        env_home=tmp_path / "hf"))["ok"] is True


def test_corrupted_part_is_refetched_not_published(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, src = hub
    m = mirror_factory(root)
    local = model_dir(tmp_path, commit)
    local.mkdir(parents=True)
    half = bytearray((src / SHARD1).read_bytes()[:600_000])
    half[1000] ^= 0xFF
    (local / (SHARD1 + ".part")).write_bytes(bytes(half))

    done = pull(m, tmp_path, commit)
    assert done.returncode == 0, done.stderr
    assert f"{SHARD1} failed verification" in done.stderr and "re-fetching from zero" in done.stderr
    assert [g["range"] for g in m.file_gets(SHARD1)] == ["bytes=600000-", None]
    assert (local / SHARD1).read_bytes() == (src / SHARD1).read_bytes()


def test_bad_source_is_never_published(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, src = hub
    served = root / REPO / "commits" / commit / SHARD2
    data = bytearray(served.read_bytes())
    data[10_000] ^= 0xFF
    served.unlink()  # a new inode: the index keeps the true hash, the bytes are wrong
    served.write_bytes(bytes(data))
    m = mirror_factory(root)
    bad = pull(m, tmp_path, commit)
    assert bad.returncode == 4
    assert "IntegrityError" in result(bad)["error"] and "not published" in result(bad)["error"]
    local = model_dir(tmp_path, commit)
    assert not (local / SHARD2).exists() and not (local / (SHARD2 + ".part")).exists()
    assert not (tmp_path / "models" / "lab--tiny-r1" / "current").exists()
    assert len(m.file_gets(SHARD2)) == 2  # fetched twice from zero, then refused


def test_disk_preflight_refuses_before_writing(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, src = hub
    m = mirror_factory(root)
    refused = agent("pull", "--repo", REPO, "--revision", commit, "--root", str(tmp_path / "models"),
                    "--endpoint", m.url, "--margin-gib", "1000000", "--extra-bytes", "12345",
                    env_home=tmp_path / "hf", endpoint=m.url)
    assert refused.returncode == 3
    total = sum(f.stat().st_size for f in src.iterdir())
    assert "not enough disk" in refused.stderr
    assert f"{total} to fetch + 12345 extra" in refused.stderr and "free" in refused.stderr
    assert not (tmp_path / "models").exists()
    assert m.file_gets() == []

    planned = agent("plan", "--repo", REPO, "--revision", "main", "--root", str(tmp_path / "models"),
                    "--endpoint", m.url, "--margin-gib", "1000000", env_home=tmp_path / "hf", endpoint=m.url)
    assert planned.returncode == 0, planned.stderr
    assert {k: result(planned)[k] for k in ("commit", "files", "bytes_to_fetch", "fits")} == {
        "commit": commit, "files": 8, "bytes_to_fetch": total, "fits": False}
    assert not (tmp_path / "models").exists()


def test_token_never_in_argv_output_manifest_or_logs(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, _ = hub
    token_file = tmp_path / "hub-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    m = mirror_factory(root, "--token-file", str(token_file), "--max-rate", "1000000")
    part = model_dir(tmp_path, commit) / (SHARD1 + ".part")
    proc = pull(m, tmp_path, commit, "--token-file", str(token_file), popen=True)
    wait_for(lambda: part_size(part) > 0)
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "--token-file" in cmdline and TOKEN not in cmdline and TOKEN not in ps
    assert TOKEN not in stdout + stderr
    assert TOKEN not in (model_dir(tmp_path, commit) / ".r1deploy-manifest.json").read_text()
    assert TOKEN not in m.log.read_text()
    assert all(r["auth"] for r in m.requests())  # the token was sent, only its presence logged

    missing = pull(m, tmp_path, "0" * 40, "--token-file", str(token_file))
    assert missing.returncode == 1 and "RevisionNotFound" in missing.stderr
    assert TOKEN not in missing.stdout + missing.stderr


def test_token_file_readable_by_others_is_refused(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, _ = hub
    m = mirror_factory(root)
    token_file = tmp_path / "hub-token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    refused = pull(m, tmp_path, commit, "--token-file", str(token_file))
    assert refused.returncode == 1 and "chmod 600" in refused.stderr
    assert TOKEN not in refused.stdout + refused.stderr
    assert m.requests() == []


def test_allow_and_ignore_patterns_select_files(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, _ = hub
    m = mirror_factory(root)
    log = io.StringIO()
    out = weights.pull(REPO, commit, tmp_path / "models", m.url, allow=["*.json"], ignore=["tokenizer*"],
                       margin_gib=0, log=log)
    local = model_dir(tmp_path, commit)
    names = sorted(p.name for p in local.iterdir() if not p.name.startswith("."))
    assert names == ["config.json", "generation_config.json", "model.safetensors.index.json",
                     "special_tokens_map.json"]
    assert out["files"] == 4 and out["changed"] is True
    assert not [g for g in m.file_gets() if g["path"].endswith(".safetensors")]
    assert weights.verify(local, full=True)["ok"] is True
    # Widening the selection later fetches just the new files.
    wider = weights.pull(REPO, commit, tmp_path / "models", m.url, margin_gib=0, log=log)
    assert wider["files"] == 8 and len(m.file_gets()) == 8


def test_pulled_directory_seeds_other_nodes_under_the_upstream_commit(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, src = hub
    upstream = mirror_factory(root)
    node_a = tmp_path / "a"
    assert weights.pull(REPO, commit, node_a, upstream.url, margin_gib=0, log=io.StringIO())["changed"]
    pulled = node_a / "lab--tiny-r1" / commit
    seed_root = tmp_path / "seed"
    assert publish(pulled, seed_root) == commit  # repo and commit come from the manifest
    assert (seed_root / REPO / "commits" / commit / SHARD1).stat().st_ino == (pulled / SHARD1).stat().st_ino
    seed = mirror_factory(seed_root)
    node_b = weights.pull(REPO, commit, tmp_path / "b", seed.url, margin_gib=0, log=io.StringIO())
    assert node_b["changed"] and node_b["files"] == 8
    assert len(seed.file_gets()) == 8 and len(upstream.file_gets()) == 8  # B never asked upstream
    assert weights.verify(tmp_path / "b" / "lab--tiny-r1" / commit, full=True)["ok"]


def test_agent_and_mirror_import_only_what_hosts_have():
    code = ("import sys, r1deploy.weights, r1deploy.mirror; "
            "print([m for m in ('pyinfra', 'jinja2', 'paramiko', 'numpy', 'safetensors', 'tokenizers', "
            "'r1deploy.spec', 'pydantic') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_status_and_no_op_need_no_hub_client(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, _ = hub
    m = mirror_factory(root)
    assert pull(m, tmp_path, commit).returncode == 0
    code = ("import sys; from r1deploy import weights; "
            "s = weights.status(sys.argv[1], sys.argv[2]); "
            "r = weights.pull(sys.argv[2], sys.argv[3], sys.argv[1], 'http://127.0.0.1:9', margin_gib=0); "
            "print(s['verified'], r['changed'], 'huggingface_hub' in sys.modules or 'requests' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "models"), REPO, commit], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"]


def test_many_nodes_pull_from_one_seed_at_once(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, src = hub
    seed = mirror_factory(root)
    nodes = [agent("pull", "--repo", REPO, "--revision", commit, "--root", str(tmp_path / f"node{i}"),
                   "--endpoint", seed.url, "--margin-gib", "0", env_home=tmp_path / "hf", endpoint=seed.url,
                   popen=True) for i in range(4)]
    for proc in nodes:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    assert len(seed.file_gets()) == 4 * 8
    for i in range(4):
        local = tmp_path / f"node{i}" / "lab--tiny-r1" / commit
        assert (local / SHARD1).read_bytes() == (src / SHARD1).read_bytes()


def test_node_waits_for_a_pipelined_seed_to_verify_a_file(tmp_path, hub, mirror_factory):  # noqa: F811
    root, commit, src = hub
    upstream = mirror_factory(root)
    seed_dir = tmp_path / "seed" / "lab--tiny-r1" / commit  # the seed's own pull, not finished yet
    seed_dir.mkdir(parents=True)
    (seed_dir / "config.json").write_bytes((src / "config.json").read_bytes())
    seed = mirror_factory(tmp_path / "unused", "--pulled", f"{REPO}={seed_dir}", "--upstream", upstream.url,
                          "--pending-wait", "0.5")
    node = pull(seed, tmp_path, commit, "--workers", "8", popen=True)
    wait_for(lambda: any(r["status"] == 503 for r in seed.requests()))
    for f in src.iterdir():  # the seed's agent renames each file in only once it is verified
        (seed_dir / f"{f.name}.tmp").write_bytes(f.read_bytes())
        os.replace(seed_dir / f"{f.name}.tmp", seed_dir / f.name)
    _, stderr = node.communicate(timeout=120)
    assert node.returncode == 0, stderr
    assert "the seed is still pulling it; waiting" in stderr
    assert weights.verify(model_dir(tmp_path, commit), full=True)["ok"]
    assert upstream.file_gets() == []  # the node took every byte from the seed
