"""The whole mission on the local lab: hosts up, deploy, smoke, idempotent re-converge, clean teardown.

Needs root, systemd-nspawn and the network to the Debian mirror and the package index (once,
then cached). Slow: the first converge installs vLLM's CPU build on every node.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
pytestmark = pytest.mark.lab


def run(*cmd: str, timeout: int = 1800, **env_extra: str) -> subprocess.CompletedProcess:
    """Run a command from the repo root; pyinfra logs to stderr, so .out holds both streams."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "R1DEPLOY_REPORTS": str(REPO / "reports"), **env_extra}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    done.out = done.stdout + done.stderr
    return done


def converge() -> subprocess.CompletedProcess:
    return run(str(Path(PY).parent / "pyinfra"), "-y", "inventories/lab.py", "deploy/main.py")


def changed_ops(output: str) -> int:
    """The Success column of pyinfra's 'Grand total' row: operations that changed something."""
    row = next(line for line in output.splitlines() if "Grand total" in line)
    cells = row.split()[2:]  # Hosts, Success, Error, No Change
    return 0 if cells[1] == "-" else int(cells[1])


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    up = run(PY, "-m", "lab", "up", "--nodes", "2", timeout=1200)
    assert up.returncode == 0, up.stderr[-3000:]
    yield json.loads(up.stdout)
    down = run(PY, "-m", "lab", "down", timeout=300)
    assert down.returncode == 0, down.stderr[-3000:]


def test_fleet_deploys_answers_reconverges_and_tears_down(lab):
    first = converge()
    assert first.returncode == 0, first.out[-8000:]

    report = run(PY, "-m", "lab", "report", timeout=600)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "3/3 answered" in report.stdout
    curl = re.search(r"^  (curl .*)$", report.stdout, re.M).group(1)
    reply = json.loads(subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=120).stdout)
    message = reply["choices"][0]["message"]
    assert (message.get("reasoning") or message.get("content")), reply
    assert reply["usage"]["completion_tokens"] > 0

    second = converge()
    assert second.returncode == 0, second.out[-8000:]
    assert changed_ops(second.out) == 0, second.out[-8000:]


def ssh(lab, name: str, command: str, user: str = "root", key: str | None = None) -> subprocess.CompletedProcess:
    ip = next(h["ip"] for h in lab["hosts"] if h["name"] == name)
    return subprocess.run(
        ["ssh", "-i", key or lab["ssh_key"], "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={lab['known_hosts']}",
         "-o", "StrictHostKeyChecking=accept-new", f"{user}@{ip}", command],
        capture_output=True, text=True, timeout=120)


def test_planner_predicts_the_kv_cache_the_served_vllm_reports(lab):
    from r1deploy.agreement import kv_tokens_from_log
    from r1deploy.inventory import load_specs
    from r1deploy.planner import plan_for_spec

    spec = load_specs("inventories/lab.py", cwd=str(REPO))["node1"]
    config = json.loads(ssh(lab, "node1", f"cat {spec.model.local_dir}/config.json").stdout)
    predicted = plan_for_spec(spec, model_config=config).kv_cache_tokens
    served = kv_tokens_from_log(ssh(lab, "node1", "journalctl -u r1-vllm -o cat --no-pager").stdout)
    assert served, "vLLM printed no KV cache size"
    assert abs(predicted - served) / served <= 0.10, (predicted, served)


def test_drift_check_sees_a_stopped_service_and_a_converge_heals_it(lab, tmp_path):
    def drift() -> subprocess.CompletedProcess:
        ran = run(str(Path(PY).parent / "pyinfra"), "-y", "inventories/lab.py", "deploy/drift.py",
                  timeout=600, R1DEPLOY_REPORTS=str(tmp_path))
        assert ran.returncode == 0 and changed_ops(ran.out) == 0, ran.out[-6000:]
        return run(PY, "-m", "r1deploy", "drift", str(tmp_path))

    clean = drift()
    assert clean.returncode == 0 and "no drift" in clean.stdout, clean.stdout
    ssh(lab, "node2", "systemctl stop r1-vllm")
    drifted = drift()
    assert drifted.returncode == 1, drifted.stdout
    assert re.search(r"node2 +service +DRIFT", drifted.stdout), drifted.stdout
    healed = converge()
    assert healed.returncode == 0, healed.out[-8000:]
    assert drift().returncode == 0


def test_bootstrap_creates_a_key_only_sudo_operator(lab, tmp_path):
    key = tmp_path / "ops"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    boot = [str(Path(PY).parent / "pyinfra"), "-y", "inventories/lab.py", "deploy/bootstrap.py",
            "--limit", "node1", "--data", f"fleet_admin_pubkey_file={key}.pub"]
    first = run(*boot, timeout=600)
    assert first.returncode == 0, first.out[-6000:]
    assert ssh(lab, "node1", "sudo -n true && id -un", user="r1ops", key=str(key)).stdout.strip() == "r1ops"
    again = run(*boot, timeout=600)
    assert again.returncode == 0 and changed_ops(again.out) == 0, again.out[-6000:]


def test_lab_down_leaves_nothing(lab):
    sys.path.insert(0, str(REPO))
    from lab import labctl

    down = run(PY, "-m", "lab", "down", timeout=300)
    assert down.returncode == 0, down.stderr
    assert labctl.leftovers() == []
