"""`r1deploy bench`'s pure parts on real `vllm bench serve` outputs from an H200 (bench/results/h200/bench/):
the two configs recorded there stand in for two releases."""

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from r1deploy.cli import main
from r1deploy.observe.bench import (
    BenchError,
    compare,
    parse_result,
    peak_output_tok_s,
    read_runs,
    spread,
    summarize,
)
from r1deploy.observe.bench_cli import _auth_env, tool_argv

REPO = Path(__file__).resolve().parent.parent
H200 = REPO / "bench" / "results" / "h200" / "bench"
FLAGS = Path(__file__).parent / "data" / "vllm-0.32.0-bench-flags.txt"


def release(config: str) -> dict:
    return summarize(read_runs(H200.glob(f"{config}-c*.json")), config)


def test_a_recorded_run_parses_into_the_numbers_the_tool_printed():
    run = parse_result(json.loads((H200 / "defaults-c16.json").read_text()), "defaults-c16.json")
    assert (run.concurrency, run.completed, run.failed) == (16, 64, 0)
    assert round(run.values["output_tok_s"]) == 1284 and round(run.values["p99_ttft_ms"], 1) == 6316.6
    assert run.values["goodput_req_s"] is None  # recorded without --goodput: "not measured", not 0


def test_a_file_that_is_not_a_result_is_named(tmp_path):
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(BenchError, match="x.json: not a vllm bench serve result"):
        read_runs([tmp_path / "x.json"])


def test_spread_shows_a_stalled_repeat_instead_of_averaging_it_in():
    # the H200's concurrency-16 runs of one config: 2,416 tok/s, and 1,250 after a sampler-kernel JIT stall
    s = spread([2416.0, 1250.0, 2390.0])
    assert (s.median, s.low, s.high, s.n) == (2390.0, 1250.0, 2416.0, 3)
    assert round(s.spread_pct) == 49


def test_sweep_points_come_out_in_concurrency_order():
    summary = release("defaults")
    assert [p["concurrency"] for p in summary["points"]] == [1, 16, 64, 256]
    assert summary["points"][3]["metrics"]["output_tok_s"]["median"] == pytest.approx(8289.6, abs=0.1)


def test_a_slower_tail_beyond_the_threshold_is_a_regression_and_noise_below_it_is_not():
    deltas = {(d.concurrency, d.metric): d for d in compare(release("planner"), release("defaults"), 10.0)}
    assert deltas[(64, "p99_ttft_ms")].regression  # 1,225 -> 1,374 ms: 12 % worse
    assert not deltas[(16, "output_tok_s")].regression  # -6 %: within 10 %
    assert deltas[(16, "p99_ttft_ms")].change_pct > 0  # 6,317 -> 3,993 ms is better
    assert [k for k, d in deltas.items() if d.regression] == [(64, "p99_ttft_ms")]
    assert not any(d.regression for d in compare(release("planner"), release("defaults"), 15.0))


def test_peak_throughput_counts_only_points_within_the_slo():
    summary = release("defaults")
    assert round(peak_output_tok_s(summary, slo_ttft_p99_ms=None)) == 8290
    assert round(peak_output_tok_s(summary, slo_ttft_p99_ms=2000)) == 6313  # c256's p99 TTFT is 5.8 s


def test_cli_writes_json_plots_and_a_comparison_and_exits_1_on_regression(tmp_path, capsys):
    out = tmp_path / "bench"
    for config in ["defaults", "planner"]:
        d = tmp_path / config
        d.mkdir()
        for f in H200.glob(f"{config}-c*.json"):
            shutil.copy(f, d / f.name)
    assert main(["bench", "--release", "r1-old", "--from-results", str(tmp_path / "defaults"),
                 "--out", str(out)]) == 0
    assert main(["bench", "--release", "r1-new", "--from-results", str(tmp_path / "planner"),
                 "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "r1-new vs r1-old" in text and "REGRESSION" in text
    for name in ["summary.json", "throughput.png", "latency.png", "comparison.txt"]:
        assert (out / "r1-new" / name).stat().st_size > 0
    assert (out / "r1-new" / "throughput.png").read_bytes()[:4] == b"\x89PNG"


def test_running_needs_three_repeats(capsys):
    assert main(["bench", "--release", "x", "--base-url", "http://127.0.0.1:9", "--model", "m",
                 "--repeats", "2"]) == 2
    assert "at least 3" in capsys.readouterr().err


def test_the_tool_is_asked_only_for_flags_vllm_0_32_knows_and_repeats_get_their_own_seed(tmp_path):
    known = {ln for ln in FLAGS.read_text().splitlines() if ln.startswith("--")}
    args = argparse.Namespace(base_url="http://gw:8080", model="m", tokenizer=None, served_name="s",
                              input_len=64, output_len=16, prompts_per_concurrency=4, min_prompts=8, seed=0,
                              warmups=2, slo_ttft_ms=2000.0, slo_tpot_ms=100.0)
    first, second = (tool_argv(["vllm"], args, 4, r, tmp_path) for r in (0, 1))
    assert {a for a in first if a.startswith("--")} <= known
    assert first[first.index("--seed") + 1] == "0" and second[second.index("--seed") + 1] == "1"
    assert first[first.index("--goodput") + 1:first.index("--goodput") + 3] == ["ttft:2000", "tpot:100"]
    assert first[first.index("--num-prompts") + 1] == "16"


@pytest.mark.parametrize("text", ["sk-bench-0123456789\n", "Authorization: Bearer sk-bench-0123456789\n"])
def test_the_tool_gets_the_key_and_ca_from_files_never_argv(tmp_path, text):
    key = tmp_path / "key"
    key.write_text(text)
    args = argparse.Namespace(api_key_file=str(key), ca_file="/etc/lab-ca.crt")
    env, prefix = _auth_env(args, remote=False)
    assert env == {"OPENAI_API_KEY": "sk-bench-0123456789", "SSL_CERT_FILE": "/etc/lab-ca.crt"}
    _, prefix = _auth_env(args, remote=True)
    assert "sk-bench" not in prefix  # the remote shell reads the file itself
    shown = subprocess.run(["sh", "-c", prefix + 'printf "%s|%s" "$OPENAI_API_KEY" "$SSL_CERT_FILE"'],
                           capture_output=True, text=True, check=True).stdout
    assert shown == "sk-bench-0123456789|/etc/lab-ca.crt"


def test_the_plan_prices_what_the_fleet_measurably_served(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "bench"
    assert main(["bench", "--release", "r1-h200", "--from-results", str(H200), "--glob", "defaults-c*.json",
                 "--out", str(out), "--no-plots"]) == 0
    summary = json.loads((out / "r1-h200" / "summary.json").read_text())
    summary["meta"]["model"] = "DeepSeek-R1"  # swept through the R1 gateway: only the R1 node's share
    (out / "r1-h200" / "summary.json").write_text(json.dumps(summary))
    capsys.readouterr()
    main(["plan", "--inventory", "inventories/prod.py", "--bench", str(out / "r1-h200"), "--json"])
    hosts = json.loads(capsys.readouterr().out)["hosts"]
    # best point within the 2 s TTFT p99 SLO: concurrency 64 at 6,313 tok/s, around the clock, shared
    # by the replicas the R1 gateway routes to (gpu-h200-01 and the heads of the two serving groups)
    replicas = [n for n, h in hosts.items() if "measured by r1deploy bench" in " ".join(h["reasons"])]
    assert "gpu-h200-01" in replicas and "gpu-h100-12" not in replicas, replicas
    assert hosts["gpu-h200-01"]["cost"]["tokens_per_day"] == pytest.approx(6312.7 * 86400 / len(replicas), rel=1e-3)
    assert any("measured by r1deploy bench r1-h200" in r for r in hosts["gpu-h200-01"]["reasons"])
    assert hosts["gpu-h100-01"]["cost"]["tokens_per_day"] == 400_000_000  # the spec's estimate stays
