"""SSH as production does it, on a hosts-only lab: a non-root login user with sudo, pinned host keys,
bootstrap over a cloud image's first password, and sshd refusing passwords afterwards.

Needs root and systemd-nspawn (hosts only: no vLLM, up in seconds once the rootfs is cached).
Its own lab: R1SSH_LAB_NAME / R1SSH_LAB_NET (default r1ssh, 10.81.0).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
PYINFRA = str(Path(PY).parent / "pyinfra")
LAB_ENV = {"R1LAB_NAME": os.environ.get("R1SSH_LAB_NAME", "r1ssh"),
           "R1LAB_NET": os.environ.get("R1SSH_LAB_NET", "10.81.0")}
CLOUD_USER, CLOUD_PASSWORD = "cloud", "first-Contact-7731"  # a fresh cloud image's default user
SECRET = "R1_TEST_SECRET=ssh-lab-secret-5b2e\n"
pytestmark = pytest.mark.lab


def run(*cmd: str, timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **LAB_ENV, "PYTHONUNBUFFERED": "1"})
    done.out = done.stdout + done.stderr
    return done


def grand_total(output: str) -> dict[str, str]:
    row = next(line for line in output.splitlines() if "Grand total" in line)
    return dict(zip(("hosts", "success", "error", "no_change"), row.split()[2:], strict=True))


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    if LAB_ENV["R1LAB_NAME"] == "r1lab":
        pytest.skip("give this test its own lab (R1SSH_LAB_NAME), not the default one")
    up = run(PY, "-m", "lab", "up", "--nodes", "1", "--hosts-only", timeout=900)
    assert up.returncode == 0, up.stderr[-3000:]
    info = json.loads(up.stdout)
    info["node1"] = next(h["ip"] for h in info["hosts"] if h["name"] == "node1")
    yield info
    down = run(PY, "-m", "lab", "down", timeout=300)
    assert down.returncode == 0, down.stderr[-3000:]


def ssh(lab, command: str, user: str | None = None, key: str | None = None,
        known_hosts: str | None = None) -> subprocess.CompletedProcess:
    """As the lab's login user by default, host key checked strictly, like the inventory does."""
    return subprocess.run(
        ["ssh", "-i", key or lab["ssh_key"], "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={known_hosts or lab['known_hosts']}",
         f"{user or lab['login_user']}@{lab['node1']}", command],
        capture_output=True, text=True, timeout=60)


def password_login(ip: str, user: str, password: str) -> str:
    """A real password attempt: 'accepted', or 'refused (allowed: ...)'."""
    import paramiko

    for _ in range(20):  # sshd re-executes on reload: a moment without a listener
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # identity is not what is tested
        try:
            client.connect(ip, username=user, password=password, look_for_keys=False, allow_agent=False,
                           timeout=10)
            return "accepted"
        except paramiko.BadAuthenticationType as exc:
            return f"refused (allowed: {','.join(exc.allowed_types)})"
        except paramiko.AuthenticationException:
            return "refused (wrong password)"
        except (OSError, paramiko.SSHException):
            time.sleep(0.5)
        finally:
            client.close()
    raise AssertionError(f"sshd on {ip} did not answer")


SECRET_DEPLOY = f'''
from pyinfra.operations import files, python
from r1deploy.roles._rollout import remote
from r1deploy.roles._secret import secret_file
from r1deploy.roles._spec import host_spec
from r1deploy.roles.base import _directories, _service_user
from r1deploy.roles.base.agent import agent_code

_service_user(host_spec())  # base's users and root-owned directories, through sudo
_directories(host_spec())
agent_code(name="Agent code", dest="/opt/r1deploy-ssh-test/r1deploy")  # one archive, unpacked as root
secret_file(name="Secret", path="/etc/r1deploy-ssh-test.env", content={SECRET!r})
python.call(name="remote() runs as root", function=lambda: print("REMOTE-UID", remote("id -u", "id")))
'''


def test_the_login_user_uploads_a_secret_through_sudo_root_only(lab, tmp_path):
    deploy = tmp_path / "secret_deploy.py"
    deploy.write_text(SECRET_DEPLOY)
    first = run(PYINFRA, "-y", "lab/inventories/lab.py", str(deploy), "--limit", "node1")
    assert first.returncode == 0, first.out[-6000:]
    assert ssh(lab, "id -u").stdout.strip() != "0"  # the inventory's user is not root
    assert "REMOTE-UID 0" in first.out  # remote() honours the inventory's _sudo
    meta = ssh(lab, "sudo stat -c '%a %U:%G' /etc/r1deploy-ssh-test.env").stdout.strip()
    content = ssh(lab, "sudo cat /etc/r1deploy-ssh-test.env").stdout
    leftovers = ssh(lab, "ls -A /tmp | grep r1deploy-upload; sudo ls -A /etc/.r1deploy-staging").stdout.split()
    unreadable = ssh(lab, "cat /etc/r1deploy-ssh-test.env").returncode
    synced = ssh(lab, "stat -c %U /opt/r1deploy-ssh-test/r1deploy/spec.py /etc/r1deploy").stdout.split()
    assert synced == ["root", "root"], synced
    print(f"secret via {lab['login_user']}+sudo: {meta}, content {'right' if content == SECRET else 'WRONG'}, "
          f"{len(leftovers)} staging leftovers, login user read it: {unreadable == 0}")
    assert (meta, content, leftovers, unreadable != 0) == ("600 root:root", SECRET, [], True)
    again = run(PYINFRA, "-y", "lab/inventories/lab.py", str(deploy), "--limit", "node1")
    secret_row = next(line for line in again.out.splitlines() if line.strip().startswith("Secret "))
    assert again.returncode == 0 and secret_row.split()[1:] == ["1", "-", "-", "1"], again.out[-3000:]  # no change
    assert again.out.count(SECRET.strip()) == first.out.count(SECRET.strip()) == 0  # never printed


def _make_cloud_image(lab) -> None:
    """What a fresh cloud image looks like: a default user with a password and sudo, and a
    drop-in that turns password login on (sorting before the lab's own r1lab.conf, so it wins)."""
    script = (f"useradd -m -s /bin/bash {CLOUD_USER} && echo {CLOUD_USER}:{CLOUD_PASSWORD} | chpasswd && "
              f"echo '{CLOUD_USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud && "
              "chmod 440 /etc/sudoers.d/90-cloud && "
              "echo 'PasswordAuthentication yes' > /etc/ssh/sshd_config.d/50-cloud-init.conf && "
              "systemctl reload ssh")
    assert ssh(lab, f"sudo sh -c \"{script}\"").returncode == 0


def test_bootstrap_pins_the_key_takes_a_password_and_then_refuses_passwords(lab, tmp_path):
    _make_cloud_image(lab)
    assert password_login(lab["node1"], CLOUD_USER, CLOUD_PASSWORD) == "accepted"  # the attempt is real
    known = tmp_path / "known_hosts"
    expected = lab["host_key_fingerprints"]["ssh-ed25519"]  # known from the image the lab baked

    wrong = run(PY, "-m", "r1deploy", "hostkey", "--known-hosts", str(known), "--expect", "SHA256:not-it",
                lab["node1"])
    assert wrong.returncode == 1 and "REFUSED" in wrong.stdout and not known.exists(), wrong.out
    pin = run(PY, "-m", "r1deploy", "hostkey", "--known-hosts", str(known), "--expect", expected, lab["node1"])
    assert pin.returncode == 0 and "pinned 1 key(s)" in pin.stdout and expected in pin.stdout, pin.out
    again = run(PY, "-m", "r1deploy", "hostkey", "--known-hosts", str(known), lab["node1"])
    assert again.returncode == 0 and "already pinned" in again.stdout, again.out

    ops = tmp_path / "ops"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ops)], check=True)
    common = ["-y", "lab/inventories/lab.py", "deploy/bootstrap.py", "--limit", "node1",
              "--data", f"ssh_known_hosts_file={known}", "--data", "fleet_admin_user=opsnew",
              "--data", f"fleet_admin_pubkey_file={ops}.pub"]
    first = run(PYINFRA, *common, "--data", f"ssh_user={CLOUD_USER}", "--data", f"ssh_password={CLOUD_PASSWORD}")
    assert first.returncode == 0, first.out[-6000:]

    after = password_login(lab["node1"], CLOUD_USER, CLOUD_PASSWORD)
    other_dropin = ssh(lab, "cat /etc/ssh/sshd_config.d/50-cloud-init.conf").stdout.strip()
    effective = dict(line.split(None, 1) for line in ssh(lab, "sudo sshd -T").stdout.splitlines() if " " in line)
    operator = ssh(lab, "sudo -n id -un", user="opsnew", key=str(ops), known_hosts=str(known)).stdout.strip()
    print(f"after bootstrap: password {after}; sshd -T passwordauthentication "
          f"{effective.get('passwordauthentication')} with 50-cloud-init.conf saying {other_dropin!r}; "
          f"operator key + sudo -> {operator}")
    assert after == "refused (allowed: publickey)"
    assert other_dropin == "PasswordAuthentication yes"
    assert effective["passwordauthentication"] == "no" and effective["kbdinteractiveauthentication"] == "no"
    assert operator == "root"

    as_operator = [*common, "--data", "ssh_user=opsnew", "--data", f"ssh_key={ops}"]
    rerun = run(PYINFRA, *as_operator)
    assert rerun.returncode == 0 and grand_total(rerun.out)["success"] == "-", rerun.out[-6000:]

    # A drop-in that sorts before 00-r1deploy.conf wins in sshd: bootstrap says so and fails.
    ssh(lab, "echo 'PasswordAuthentication yes' | sudo tee /etc/ssh/sshd_config.d/00-aaa.conf")
    beaten = run(PYINFRA, *as_operator)
    ssh(lab, "sudo rm /etc/ssh/sshd_config.d/00-aaa.conf")
    assert beaten.returncode != 0 and "PasswordAuthentication is not no" in beaten.out, beaten.out[-4000:]


def test_an_unpinned_or_changed_host_key_is_refused(lab, tmp_path):
    lab_pins = run(PY, "-m", "r1deploy", "hostkey", "--inventory", "lab/inventories/lab.py")
    assert lab_pins.returncode == 0 and lab_pins.stdout.count("already pinned") == len(lab["hosts"]), lab_pins.out

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    unpinned = run(PYINFRA, "-y", "lab/inventories/lab.py", "deploy/bootstrap.py", "--limit", "node1",
                   "--data", f"ssh_known_hosts_file={empty}", "--data", "fleet_admin_pubkey_file=/dev/null")
    assert unpinned.returncode != 0 and "No host key" in unpinned.out, unpinned.out[-3000:]

    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"{lab['node1']} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    refused = run(PY, "-m", "r1deploy", "hostkey", "--known-hosts", str(changed), "--yes", lab["node1"])
    assert refused.returncode == 1 and "ANOTHER key" in refused.stdout, refused.out
    assert len(changed.read_text().splitlines()) == 1  # nothing appended
    print("unpinned host: pyinfra refused to connect; changed key: hostkey refused, known_hosts kept")
