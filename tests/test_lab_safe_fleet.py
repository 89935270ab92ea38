"""Issue 21 on the lab: a vLLM key rotation costs no request, and converges take turns.

Items 2 and 6, through deploy/main.py on the shared lab (tests/conftest.py `fleet`), with the
bounded load loop through nginx (tests/loadloop.py) where users would see something. Each test
leaves the fleet as the lab inventory says.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from labharness import assert_no_user_saw_it, converge, host_ip, node_names, ssh, under_load

from r1deploy.fleet import lease

pytestmark = pytest.mark.lab


def _key_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text(secrets.token_urlsafe(32) + "\n")
    path.chmod(0o600)
    return path


def _node_answers(lab, key: str) -> list[int]:
    return [requests.get(f"http://{host_ip(lab, n)}:8000/v1/models", timeout=30,
                         headers={"Authorization": f"Bearer {key}"}).status_code for n in node_names(lab)]


def test_vllm_key_rotation_under_load_fails_no_request_issue_21_item_2(lab, fleet, tmp_path):
    old = Path(lab["edge"]["vllm_key"])
    new = _key_file(tmp_path, "vllm-next.key")
    window = ("--data", f"vllm_api_key_file={new}", "--data", f"vllm_api_key_previous_file={old}")
    # Without the window the change is refused before any host changes.
    refused = converge("--data", f"vllm_api_key_file={new}")
    assert refused.returncode != 0 and "Set vllm_api_key_previous_file" in refused.out, refused.out[-4000:]

    opened, seen = under_load(lab, lambda: converge(*window), max_seconds=1500)
    assert opened.returncode == 0, opened.out[-8000:]
    assert_no_user_saw_it(seen)
    assert _node_answers(lab, old.read_text().strip()) == [200] * len(node_names(lab))  # both keys accepted
    assert _node_answers(lab, new.read_text().strip()) == [200] * len(node_names(lab))

    # The operator's key file now holds the new key (the lab inventory names `old`'s path, so the
    # fleet ends as the inventory says, with no rotation back); a plain converge retires the old key.
    retiring = old.read_text().strip()
    old.write_text(new.read_text())
    retired, seen2 = under_load(lab, converge, max_seconds=1500)
    assert retired.returncode == 0, retired.out[-8000:]
    assert_no_user_saw_it(seen2)
    assert _node_answers(lab, retiring) == [401] * len(node_names(lab))
    assert _node_answers(lab, new.read_text().strip()) == [200] * len(node_names(lab))
    print(f"\nkey rotation: window {seen.summary()}; retiring {seen2.summary()}")


def test_a_converge_waits_for_the_lease_then_refuses_naming_the_holder_issue_21_item_6(lab, fleet):
    """Another controller's lease on the gateway (written by the same command a run uses): a no-change
    converge waits rollout_lock_wait_s, then refuses naming it; once it is gone, the converge runs."""
    take = lease.acquire_command("other-controller", "alice", 4242, "t-lab-other")
    assert ssh(lab, "gateway", take).stdout.startswith("TAKEN")
    try:
        t0 = time.monotonic()
        held = converge("--data", "rollout_lock_wait_s=10")
        waited = time.monotonic() - t0
        assert held.returncode != 0, held.out[-4000:]
        assert "alice@other-controller (pid 4242)" in held.out and "waiting up to 10s" in held.out, held.out[-4000:]
        assert waited >= 10
    finally:
        ssh(lab, "gateway", lease.release_command("t-lab-other"))
    free = converge()
    assert free.returncode == 0, free.out[-8000:]
    assert ssh(lab, "gateway", f"test -e {lease.LEASE_DIR} && echo held || echo free").stdout.strip() == "free"


def test_two_converges_at_once_one_waits_or_refuses_issue_21_item_6(lab, fleet):
    """Two no-change converges started together: never both inside at once. With no wait, either
    one refuses naming the other's pid, or (if the first was done before the second asked) both pass."""
    results: dict[int, subprocess.CompletedProcess] = {}

    def run(i: int) -> None:
        results[i] = converge("--data", "rollout_lock_wait_s=0")

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.returncode for r in results.values())
    refused = [r for r in results.values() if "another converge holds the gateway's lease" in r.out]
    print(f"\ntwo converges at once: exit codes {codes}, {len(refused)} refused")
    assert codes[0] == 0, "neither converge ran"
    assert codes == [0, 0] or (len(refused) == 1 and refused[0].returncode != 0), [r.out[-3000:] for r in refused]
    assert ssh(lab, "gateway", f"test -e {lease.LEASE_DIR} && echo held || echo free").stdout.strip() == "free"
