"""A bad inventory stops `pyinfra … deploy/main.py` before connecting, naming host and field."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

INVENTORY = '''
nodes = [("gpu-1", {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": "main",
                    "vllm_port": 99999, "ssh_hostname": "127.0.0.1", "ssh_port": 9,
                    "fleet_admin_networks": ["10.0.0.0/24"]})]

from r1deploy.fleet.inventory import validate_before_connecting

validate_before_connecting(__file__)
'''


def test_bad_inventory_stops_the_deploy_before_connecting(tmp_path):
    inventory = tmp_path / "fleet.py"
    inventory.write_text(INVENTORY)
    ran = subprocess.run([str(Path(sys.executable).parent / "pyinfra"), "-y", str(inventory), "deploy/main.py"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    out = ran.stdout + ran.stderr
    assert ran.returncode != 0
    assert "host 'gpu-1': vllm_port: Input should be less than or equal to 65535" in out
    assert "not a 40-hex commit" in out
    assert "Connecting to hosts" not in out


def test_good_inventory_loads(tmp_path):
    from r1deploy.fleet.inventory import load_specs

    specs = load_specs(str(REPO / "inventories" / "prod.py"), cwd=str(REPO))
    assert specs["gpu-h200-01"].model.repo_id == "deepseek-ai/DeepSeek-R1"


def test_the_command_lines_data_is_what_gets_validated(tmp_path):
    """`--data ssh_key=…` (how the drift timer gives its own key) replaces the inventory's value
    before the check: a key file missing on this machine but overridden is no error, and an
    override that is itself wrong is named."""
    inventory = tmp_path / "fleet.py"
    good_key = tmp_path / "id_ed25519"
    good_key.write_text("key\n")
    good_key.chmod(0o600)
    inventory.write_text(INVENTORY.replace('"vllm_port": 99999', f'"ssh_key": "{tmp_path}/missing"')
                         .replace('"main"', '"' + "0" * 40 + '"'))
    pyinfra = str(Path(sys.executable).parent / "pyinfra")

    def deploy(*extra):
        ran = subprocess.run([pyinfra, "-y", str(inventory), "deploy/main.py", *extra], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        return ran.stdout + ran.stderr

    assert f"ssh_key: '{tmp_path}/missing' does not exist" in deploy()
    overridden = deploy("--data", f"ssh_key={good_key}")
    assert "ssh_key" not in overridden and "Connecting to hosts" in overridden, overridden[-2000:]
    assert f"ssh_key: '{tmp_path}/other' does not exist" in deploy("--key", f"{tmp_path}/other")


def test_a_missing_or_hostless_inventory_is_never_ok(tmp_path, capsys):
    """issue 21 item 11: `check nonexistent.py` said "ok: 0 host(s) valid" and exited 0 (pyinfra reads
    a name that is no file as host names), and `plan --inventory` planned nothing with exit 0. A
    missing file and an inventory without hosts are errors: check exits 1, plan 2 (bad input)."""
    from r1deploy.cli import main

    empty = tmp_path / "empty.py"
    empty.write_text("nodes = []\n")
    for inventory, why in [(str(tmp_path / "nonexistent.py"), "no such inventory file"),
                           (str(empty), "no hosts in this inventory")]:
        assert main(["check", inventory, "--no-secrets"]) == 1
        assert main(["plan", "--inventory", inventory]) == 2
        out = capsys.readouterr()
        assert "ok:" not in out.out and out.err.count(why) == 2, out
        assert "Traceback" not in out.err
