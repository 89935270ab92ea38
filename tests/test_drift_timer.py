"""The drift timer role on a bare ops host (facts given, nothing connects): what it would do."""

import subprocess

import pytest
from factharness import World, plan
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.files import Link
from pyinfra.facts.server import Groups, LinuxName, Os, Users, Which
from r1deploy.roles._pip import VenvPackages
from r1deploy.roles.drift_timer import drift_timer

HEAD = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def bare_ops_host() -> World:
    return World(facts={Os: "Linux", LinuxName: "Debian", Users: {}, Groups: set(), Link: None, VenvPackages: {},
                        Which: lambda command: f"/usr/bin/{command}"})


def test_a_bare_ops_host_gets_user_key_checkout_venv_and_timer(tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("gpu-1 ssh-ed25519 AAAA\n")
    data = {"drift_inventory": "inventories/prod.py", "drift_on_calendar": "hourly", "drift_keep_runs": 5,
            "drift_known_hosts_file": str(known), "install_find_links": ["http://10.0.0.1:8700/"]}
    _, commands = plan(drift_timer, {"ops": (data, bare_ops_host())})
    text = "\n".join(commands["ops"])
    assert "ssh-keygen -q -t ed25519 -N '' -C r1deploy-drift@ops -f /var/lib/r1drift/.ssh/id_ed25519" in text
    assert f"upload /opt/r1deploy-drift/releases/{HEAD}.tar" in text
    assert "--no-index --find-links http://10.0.0.1:8700/" in text and "pyinfra==3.10.0" in text
    assert "OnCalendar=hourly" in text and "Persistent=true" in text
    assert ("ExecStart=/opt/r1deploy-drift/venv/bin/python -m r1deploy drift-run inventories/prod.py "
            "--reports /var/lib/r1drift/reports --keep 5 --textfile /var/lib/r1drift/textfile/r1deploy_drift.prom "
            "--data ssh_key=/var/lib/r1drift/.ssh/id_ed25519 "
            "--data ssh_known_hosts_file=/var/lib/r1drift/.ssh/known_hosts") in text
    assert "WorkingDirectory=/opt/r1deploy-drift/current" in text
    assert f"upload /var/lib/r1drift/.ssh/known_hosts\n{known}" in text


def test_bad_timer_settings_name_the_key(tmp_path):
    with pytest.raises(DeployError, match="drift_known_hosts_file: .* does not exist on the controller"):
        plan(drift_timer, {"ops": ({"drift_known_hosts_file": str(tmp_path / "nope")}, bare_ops_host())})
    with pytest.raises(DeployError, match="drift_commit 'not-a-commit' is not a commit"):
        plan(drift_timer, {"ops": ({"drift_commit": "not-a-commit"}, bare_ops_host())})
    with pytest.raises(DeployError, match="keep_runs"):
        plan(drift_timer, {"ops": ({"drift_keep_runs": 0}, bare_ops_host())})


def test_the_inventorys_secret_files_go_to_the_same_paths_for_the_checker_only(tmp_path):
    """The check loads the fleet inventory on the ops host, secrets included: each listed file (a
    directory: each file in it) lands at its controller path, 0600 for drift_user, through a
    root-only staging directory (roles/_secret.secret_file)."""
    from pyinfra.facts.files import File

    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "alice").write_text("sk-alice-secret\n")
    tls = tmp_path / "tls.key"
    tls.write_text("-----BEGIN PRIVATE KEY-----\n")
    world = bare_ops_host()
    world.facts[File] = None
    _, commands = plan(drift_timer, {"ops": ({"drift_secret_files": [str(keys), str(tls)]}, world)})
    text = "\n".join(commands["ops"])
    for path in (keys / "alice", tls):
        assert f"install -m 600 -o r1drift -g r1drift {path.parent}/.r1deploy-staging/{path.name} {path}" in text
    assert f"upload {keys}/.r1deploy-staging/alice\nb'sk-alice-secret\\n'" in text
    with pytest.raises(DeployError, match=r"drift_secret_files: .*/nope does not exist on the controller"):
        plan(drift_timer, {"ops": ({"drift_secret_files": [str(tmp_path / "nope")]}, bare_ops_host())})
    with pytest.raises(DeployError, match="secret_files"):
        plan(drift_timer, {"ops": ({"drift_secret_files": ["relative/key"]}, bare_ops_host())})


def test_drift_env_secrets_go_to_a_root_only_environment_file_not_the_unit():
    """issue 21 item 14: drift_env is where the fleet's key variables go (the check loads an inventory
    with vllm_api_key_env), and each was an Environment= line of the world-readable (0644) unit.
    They go to a 0600 root EnvironmentFile through roles/_secret (never shown in --diff); the unit
    only names that file."""
    from pyinfra.facts.files import File

    world = bare_ops_host()
    world.facts[File] = None
    data = {"drift_env": {"R1_API_KEY": "sk-drift-secret", "HTTPS_PROXY": "http://10.0.0.1:3128"}}
    _, commands = plan(drift_timer, {"ops": (data, world)})
    # The checkout's tar is uploaded too, and this very file is in it: look at the other commands.
    ops = [c for c in commands["ops"] if "] upload /opt/r1deploy-drift/releases/" not in c]
    unit = next(c for c in ops if "] upload /etc/systemd/system/r1deploy-drift.service" in c)
    assert "EnvironmentFile=/opt/r1deploy-drift/drift.env" in unit
    assert "sk-drift-secret" not in unit and "R1_API_KEY" not in unit
    assert ("install -m 600 -o root -g root /opt/r1deploy-drift/.r1deploy-staging/drift.env "
            "/opt/r1deploy-drift/drift.env") in "\n".join(ops)
    staged = [c for c in ops if "sk-drift-secret" in c]
    assert len(staged) == 1 and "] upload /opt/r1deploy-drift/.r1deploy-staging/drift.env" in staged[0]
    assert "R1_API_KEY=sk-drift-secret\\n" in staged[0]
