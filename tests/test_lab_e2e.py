"""The whole mission on the local lab: hosts up, deploy, smoke, idempotent re-converge, clean teardown.

Needs root, systemd-nspawn and the network to the Debian mirror and the package index (once,
then cached). Slow: the first converge installs vLLM's CPU build on every node. The lab and its
first converge are shared with the other lab modules (tests/labharness.py); `lab down` leaving
nothing is checked when the session's lab is torn down.
"""

import json
import re
import subprocess

import pytest
from labharness import PY, PYINFRA, REPO, changed_ops, client_key, converge, run, ssh

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(fleet):
    return fleet[0]


def test_fleet_deploys_answers_and_reconverges(fleet, tmp_path):
    lab, first = fleet
    assert first.returncode == 0, first.out[-8000:]
    # At pyinfra's normal verbosity (as `make lab` runs it): what each node's weights pull did.
    for node in (h["name"] for h in lab["hosts"] if h["role"] == "node"):
        assert any(node in line and "weights:" in line and "moved in" in line for line in first.out.splitlines()), \
            f"no weights summary for {node} in the first converge's output"

    report = run(PY, "-m", "lab", "report", timeout=600)
    assert report.returncode == 0, report.stdout + report.stderr
    assert f"{len(lab['hosts'])}/{len(lab['hosts'])} answered" in report.stdout
    # Every line the report tells a user to type, run as printed (the key read from its file, the
    # lab's CA for TLS), in a directory of its own: a shell without sudo copies the CA out there.
    printed = re.findall(r"^  (\S.*)$", report.stdout.split("Try it:", 1)[1], re.M)
    assert printed[-1].startswith("curl ") and client_key(lab) not in report.stdout, printed
    reply = json.loads(subprocess.run(["bash", "-c", "set -e\n" + "\n".join(printed)], cwd=tmp_path,
                                      capture_output=True, text=True, timeout=120).stdout)
    message = reply["choices"][0]["message"]
    assert (message.get("reasoning") or message.get("content")), reply
    assert reply["usage"]["completion_tokens"] > 0

    second = converge()
    assert second.returncode == 0, second.out[-8000:]
    assert changed_ops(second.out) == 0, second.out[-8000:]


def test_planner_predicts_the_kv_cache_the_served_vllm_reports(lab):
    from r1deploy.fleet.inventory import load_specs
    from r1deploy.planner import plan_for_spec
    from r1deploy.planner.agreement import kv_tokens_from_log

    spec = load_specs("lab/inventories/lab.py", cwd=str(REPO))["node1"]
    config = json.loads(ssh(lab, "node1", f"cat {spec.model.local_dir}/config.json").stdout)
    predicted = plan_for_spec(spec, model_config=config).kv_cache_tokens
    served = kv_tokens_from_log(ssh(lab, "node1", "journalctl -u r1-vllm -o cat --no-pager").stdout)
    assert served, "vLLM printed no KV cache size"
    assert abs(predicted - served) / served <= 0.10, (predicted, served)


def test_drift_check_sees_a_stopped_service_and_a_converge_heals_it(lab, tmp_path):
    def drift() -> subprocess.CompletedProcess:
        ran = run(PYINFRA, "-y", "lab/inventories/lab.py", "deploy/drift.py",
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
    boot = [PYINFRA, "-y", "lab/inventories/lab.py", "deploy/bootstrap.py",
            "--limit", "node1", "--data", f"fleet_admin_pubkey_file={key}.pub"]
    first = run(*boot, timeout=600)
    assert first.returncode == 0, first.out[-6000:]
    assert ssh(lab, "node1", "sudo -n true && id -un", user="r1ops", key=str(key)).stdout.strip() == "r1ops"
    again = run(*boot, timeout=600)
    assert again.returncode == 0 and changed_ops(again.out) == 0, again.out[-6000:]
