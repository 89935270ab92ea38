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


def run(*cmd: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "R1DEPLOY_REPORTS": str(REPO / "reports")}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


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
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]

    report = run(PY, "-m", "lab", "report", timeout=600)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "3/3 answered" in report.stdout
    curl = re.search(r"^  (curl .*)$", report.stdout, re.M).group(1)
    reply = json.loads(subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=120).stdout)
    message = reply["choices"][0]["message"]
    assert (message.get("reasoning") or message.get("content")), reply
    assert reply["usage"]["completion_tokens"] > 0

    second = converge()
    assert second.returncode == 0, second.stdout[-6000:]
    assert changed_ops(second.stdout) == 0, second.stdout[-6000:]


def test_lab_down_leaves_nothing(lab):
    sys.path.insert(0, str(REPO))
    from lab import labctl

    down = run(PY, "-m", "lab", "down", timeout=300)
    assert down.returncode == 0, down.stderr
    assert labctl.leftovers() == []
