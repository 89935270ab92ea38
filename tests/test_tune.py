"""Issue 22 item 6: `r1deploy tune`'s candidates, winner and inventory data (r1deploy/observe/tune.py) and the
command around them (r1deploy/commands/tune.py). The sweep against a real fleet is the lab test at the end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from r1deploy.commands import tune as cmd
from r1deploy.fleet.inventory import load_specs
from r1deploy.observe import tune
from r1deploy.spec import spec_from_host_data

REPO = Path(__file__).resolve().parent.parent
GPU = tune.Baseline(batched=2048, seqs=256, fp8_kv=False, offload=False, fp8_kv_valid=True, offload_valid=True)
CPU = tune.Baseline(batched=2048, seqs=256, fp8_kv=False, offload=False, fp8_kv_valid=False, offload_valid=False)


def test_vllms_own_defaults_by_gpu_memory():
    assert tune.vllm_defaults(79.2, "H100 SXM") == (8192, 1024)
    assert tune.vllm_defaults(79.2, "A100 80GB") == (2048, 256) == tune.vllm_defaults(44, "L40S")


def test_baseline_reads_the_rendered_args_and_assumes_vllms_defaults_for_the_rest():
    base = tune.baseline_of({"max-num-seqs": 128, "kv-cache-dtype": "fp8", "kv-offloading-size": 26}, "cuda",
                            gpu_fp8=True, defaults=(8192, 1024))
    assert (base.batched, base.seqs, base.fp8_kv, base.offload) == (8192, 128, True, True)
    assert base.assumed == ("max-num-batched-tokens",) and base.fp8_kv_valid and base.offload_valid
    cpu = tune.baseline_of({}, "cpu", gpu_fp8=False, defaults=(2048, 256))
    assert not cpu.fp8_kv_valid and not cpu.offload_valid
    own = tune.baseline_of({}, "cuda", gpu_fp8=True, defaults=(8192, 1024), connector=True)
    assert not own.offload_valid  # an operator's own KV connector: offload would replace it


def test_only_the_knobs_valid_for_the_node_are_swept():
    assert tune.knob_values(GPU) == {tune.BATCHED: [1024, 4096], tune.SEQS: [128, 512], tune.KV_DTYPE: [True],
                                     tune.OFFLOAD: [True]}
    assert set(tune.knob_values(CPU)) == {tune.BATCHED, tune.SEQS}  # no FP8 KV, no offload on the CPU backend


def test_moves_vllm_refuses_are_never_tried():
    tight = tune.Baseline(batched=1024, seqs=1024, fp8_kv=True, offload=True, fp8_kv_valid=True, offload_valid=True)
    values = tune.knob_values(tight)
    assert values[tune.BATCHED] == [2048]  # 512 < max_num_seqs 1024: vLLM refuses it
    assert values[tune.SEQS] == [512]  # 2048 > max_num_batched_tokens 1024
    assert values[tune.KV_DTYPE] == [False] and values[tune.OFFLOAD] == [False]


def test_round_one_is_the_baseline_and_one_knob_at_a_time_bounded():
    first = tune.first_round(GPU)
    assert [c.label for c in first] == ["baseline", "max-num-batched-tokens=1024", "max-num-batched-tokens=4096",
                                        "max-num-seqs=128", "max-num-seqs=512", "fp8-kv-on", "offload-on"]
    assert all(len(c.changes) <= 1 for c in first)
    assert len(tune.first_round(GPU, limit=4)) == 3  # one place kept for round two


def test_round_two_combines_each_knobs_best_move_that_beat_the_baseline():
    first = tune.first_round(GPU)
    caps = {"baseline": 4.0, "max-num-batched-tokens=1024": 4.6, "max-num-batched-tokens=4096": 3.0,
            "max-num-seqs=128": 4.1, "max-num-seqs=512": 3.9, "fp8-kv-on": 5.0, "offload-on": 4.15}
    both = tune.second_round(caps, first)
    assert both is not None and both.changes == {tune.BATCHED: 1024, tune.KV_DTYPE: True}
    assert both.label == "max-num-batched-tokens=1024,fp8-kv-on"
    assert tune.second_round({**caps, "max-num-batched-tokens=1024": 4.1}, first) is None  # one knob gained only


def test_the_winner_must_beat_the_baseline_by_the_margin_and_ties_go_to_fewer_changes():
    first = tune.first_round(GPU)
    combo = tune.Candidate("max-num-batched-tokens=1024,fp8-kv-on", {tune.BATCHED: 1024, tune.KV_DTYPE: True})
    won = tune.choose_winner({"baseline": 4.0, "fp8-kv-on": 5.0, combo.label: 5.0}, [*first, combo])
    assert won.winner.label == "fp8-kv-on" and won.capacity == 5.0 and "1.25×" in won.why
    stand = tune.choose_winner({"baseline": 4.0, "fp8-kv-on": 4.1, "offload-on": None}, first)
    assert stand.winner.label == "baseline" and stand.why.startswith("the baseline stands")
    none = tune.choose_winner({"baseline": None, "fp8-kv-on": 3.0}, first)
    assert none.winner.label == "baseline" and none.capacity == 0.0 and none.why.startswith("no winner")


def test_inventory_data_keeps_the_nodes_own_extra_args_and_maps_each_knob_to_its_spec_key():
    own = {"load-format": "dummy"}
    data = tune.inventory_data({tune.BATCHED: 512, tune.SEQS: 64, tune.KV_DTYPE: False, tune.OFFLOAD: False}, own, None)
    assert data == {"vllm_extra_args": {"load-format": "dummy", "max-num-batched-tokens": 512, "kv-cache-dtype": "auto"},
                    "vllm_max_num_seqs": 64, "vllm_kv_offload_gib": 0}
    assert tune.inventory_data({tune.OFFLOAD: True}, own, 40) == {"vllm_kv_offload_gib": 40}
    assert tune.inventory_data({tune.OFFLOAD: True}, own, 0) == {"vllm_kv_offload_gib": "auto"}  # the planner sizes it
    assert tune.inventory_data({}, own, None) == {}


def test_the_converge_passes_each_value_as_pyinfra_reads_it_back():
    data = {"vllm_extra_args": {"max-num-batched-tokens": 512, "enforce-eager": True}, "vllm_max_num_seqs": 64,
            "vllm_kv_offload_gib": None}
    argv = cmd.converge_argv("inventories/prod.py", "gpu-h100-01", data)
    assert argv[1:4] == ["-m", "pyinfra", "-y"] and argv[argv.index("--limit") + 1] == "gpu-h100-01"
    pairs = [argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--data"]
    # pyinfra_cli's own parser of --data values, in a process of its own (importing pyinfra_cli patches ssl
    # with gevent in the importing process).
    code = ("import json, sys; from pyinfra_cli.util import parse_cli_arg; "
            "print(json.dumps({k: parse_cli_arg(v) for k, v in json.loads(sys.argv[1])}))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(pairs)], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout) == data, out.stderr


def test_the_group_data_snippet_is_python_the_spec_accepts():
    verdict = tune.Verdict(tune.Candidate("x"), 5.0, 4.0, "fp8-kv-on: 5 req/s within the SLO vs the baseline's 4")
    data = {"vllm_extra_args": {"kv-cache-dtype": "fp8"}, "vllm_max_num_seqs": 64, "vllm_kv_offload_gib": None}
    text = tune.group_data_text("gpu-h100-01", data, verdict, "reports/tune/gpu-h100-01/tune.json")
    scope: dict = {}
    exec(text, scope)  # noqa: S102 - the snippet is what an inventory's group_data module runs
    keys = {k: v for k, v in scope.items() if not k.startswith("__")}
    assert keys == data
    spec = spec_from_host_data("gpu-h100-01", {"model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
                                               "model_revision": "a" * 40, **keys})
    assert spec.vllm.max_num_seqs == 64 and spec.vllm.extra_args == {"kv-cache-dtype": "fp8"}


def test_csv_rows_carry_each_candidates_capacity_and_bracket():
    first = tune.first_round(CPU)[:2]
    rows = tune.csv_rows({"baseline": {"capacity_req_s": 2.0, "bracket": [2.0, 2.2]},
                          first[1].label: {"capacity_req_s": None, "error": "converge exited 1"}}, first)
    assert rows[1] == ["baseline", "", 2.0, 2.0, 2.2, ""]
    assert rows[2][2] is None and rows[2][5] == "converge exited 1"


def test_the_prod_distills_baseline_is_what_the_plan_renders():
    spec = load_specs(str(REPO / "inventories" / "prod.py"), cwd=str(REPO))["gpu-h100-01"]
    base = cmd.baseline_for(spec)
    assert (base.batched, base.seqs, base.fp8_kv, base.offload) == (1024, 1024, True, True)
    assert base.fp8_kv_valid and base.offload_valid and not base.assumed


def test_dry_run_lists_the_converges_and_touches_nothing():
    out = subprocess.run([sys.executable, "-m", "r1deploy", "tune", "--inventory", "inventories/prod.py", "--limit",
                          "gpu-h100-01", "--base-url", "http://10.20.0.21:8000", "--dry-run"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "fp8-kv-off: pyinfra -y" in out.stdout and "--data vllm_kv_offload_gib=0" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "r1deploy", "tune", "--inventory", "inventories/prod.py", "--limit",
                          "gateway-01", "--base-url", "http://x", "--dry-run"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "not serving nodes" in bad.stderr


def _args(tmp_path, **kw):
    import argparse

    base = dict(inventory="inventories/prod.py", limit="gpu-h100-01", apply=False, max_candidates=8,
                min_gain=0.05, out=str(tmp_path))
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("apply", [False, True])
def test_the_hosts_go_back_to_the_inventory_unless_apply(tmp_path, monkeypatch, apply):
    """The orchestration with the converge and the measurement replaced (the lab test runs both for real)."""
    spec = load_specs(str(REPO / "inventories" / "prod.py"), cwd=str(REPO))["gpu-h100-01"]
    converged: list[dict] = []
    caps = {"baseline": 4.0, "fp8-kv-off": 3.0, "offload-off": 4.1, "max-num-batched-tokens-2048": 4.6,
            "max-num-seqs-512": 4.5, "max-num-batched-tokens-2048+max-num-seqs-512": 5.0}  # by result folder

    def converge(argv, log):
        converged.append({argv[i + 1].split("=")[0]: argv[i + 1].split("=", 1)[1] for i, a in enumerate(argv)
                          if a == "--data"})
        return 0

    monkeypatch.setattr(cmd, "_converge", converge)
    monkeypatch.setattr(cmd, "_measure", lambda args, out: {"capacity_req_s": caps[out.name], "bracket": [None, None]})
    candidates, results, verdict, log = cmd.sweep(_args(tmp_path, apply=apply), spec, tmp_path)
    assert [c.label for c in candidates][-1] == "max-num-batched-tokens=2048,max-num-seqs=512"
    assert verdict.winner.label == candidates[-1].label and log[-1]["candidate"] == ("apply" if apply else "restore")
    if apply:
        assert json.loads(converged[-1]["vllm_extra_args"])["max-num-batched-tokens"] == 2048
    else:
        assert converged[-1] == {}  # the inventory as it is
    files = cmd.write_evidence(tmp_path, "gpu-h100-01", spec, candidates, results, verdict, log)
    assert [p.name for p in files][:3] == ["tune.json", "tune.csv", "gpu-h100-01.group_data.py"]
    assert "vllm_max_num_seqs = 512" in files[2].read_text()


def test_a_failed_measurement_still_puts_the_hosts_back(tmp_path, monkeypatch):
    spec = load_specs(str(REPO / "inventories" / "prod.py"), cwd=str(REPO))["gpu-h100-01"]
    converged = []
    monkeypatch.setattr(cmd, "_converge", lambda argv, log: converged.append(argv) or 0)

    def boom(args, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(cmd, "_measure", boom)
    with pytest.raises(KeyboardInterrupt):
        cmd.sweep(_args(tmp_path), spec, tmp_path)
    assert "--data" not in converged[-1]  # the restore ran, to the inventory as it is



def test_the_plot_draws_each_candidates_capacity_where_matplotlib_is_installed(tmp_path):
    pytest.importorskip("matplotlib")  # the observe extra; without it tune writes tune.csv alone
    first = tune.first_round(CPU)[:2]
    png = cmd._plot(tmp_path / "tune.png", {"baseline": {"capacity_req_s": 2.0, "bracket": [2.0, 2.4]}}, first)
    assert png is not None and png.stat().st_size > 1000
