"""`r1deploy plan`'s P/D split (issue 25): prefill:decode from the workload's input/output lengths."""

import json
import subprocess
import sys

import pytest
from test_render import REPO

from r1deploy.planner import ModelSpec, plan
from r1deploy.planner.catalog import find_gpu
from r1deploy.planner.pd_split import (
    ReplicaRates,
    Workload,
    best_split,
    prefill_flops_per_token,
    propose,
    served,
)
from r1deploy.planner.recipe import Slo

R1 = ModelSpec.from_catalog("DeepSeek-R1")
H200 = find_gpu("H200")


@pytest.fixture(scope="module")
def r1_node():
    """R1 on one 8×H200 node, as the H200 inventories plan it."""
    return plan(R1, H200, 8, 1, max_model_len=65536, gpu_memory_utilization=0.95, fp8=True)


def test_the_split_serves_the_most_of_every_split_and_ties_go_to_decode():
    rates = ReplicaRates(prefill_tokens_s=1000, decode_tokens_s=1000, decode_batch=8, engines=1)
    work = Workload(1000, 1000)  # one replica-second of each side per request: any split but the extremes ties
    assert best_split(4, rates, work) == (2, 2.0)
    skewed = ReplicaRates(prefill_tokens_s=3000, decode_tokens_s=1000, decode_batch=8, engines=1)
    x, per_s = best_split(8, skewed, work)
    assert per_s == max(served(p, 8 - p, skewed, work) for p in range(1, 8)) and x == 2  # 2:6 beats 3:5 (ties, more decode)


@pytest.mark.parametrize("replicas, work, expected", [
    (4, Workload(32000, 1000), "3:1"),  # long prompts, short answers: prefill-heavy
    (4, Workload(512, 8192), "1:3"),  # short prompts, long reasoning: decode-heavy
    (4, Workload(2048, 2048), "2:2"),
    (2, Workload(2048, 2048), "1:1"),
])
def test_long_inputs_lean_prefill_heavy_and_long_answers_decode_heavy(r1_node, replicas, work, expected):
    split = propose(R1.arch, H200, r1_node, replicas, work, Slo())
    assert split.ratio == expected, split.reasons
    assert split.prefill + split.decode == replicas and split.requests_per_s > 0


def test_more_input_never_takes_a_prefill_replica_away(r1_node):
    counts = [propose(R1.arch, H200, r1_node, 8, Workload(i, 1024), Slo()).prefill for i in (256, 1024, 4096, 16384, 60000)]
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_attention_makes_long_prompts_dearer_per_token():
    assert prefill_flops_per_token(R1.arch, 32768) > prefill_flops_per_token(R1.arch, 1024) * 1.5


def test_a_set_needs_two_replicas_and_says_why(r1_node):
    split = propose(R1.arch, H200, r1_node, 1, Workload(2048, 2048), Slo())
    assert (split.prefill, split.decode, split.bottleneck) == (0, 0, "none")
    assert "needs a prefill and a decode replica" in split.reasons[0]


def test_the_reason_names_both_rates_and_the_bottleneck(r1_node):
    split = propose(R1.arch, H200, r1_node, 4, Workload(8192, 512), Slo())
    text = "\n".join(split.reasons)
    assert "prompt tokens/s (compute-bound)" in text and "within the TPOT SLO (100 ms" in text
    assert f"{split.ratio} serves the most" in text and f"({split.bottleneck} is the bottleneck" in text


def _plan_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "r1deploy", "plan", *argv], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


@pytest.mark.parametrize("nodes, expected", [(2, "split  1:1 (prefill:decode) of 2 replica(s)"),
                                             (4, "split  1:3 (prefill:decode) of 4 replica(s)")])
def test_r1deploy_plan_shows_the_split_for_r1_on_h200_nodes(nodes, expected):
    out = _plan_cli("--model", "DeepSeek-R1", "--gpu", "H200", "--gpus", "8", "--pd-nodes", str(nodes))
    assert out.returncode == 0, out.stderr
    assert f"== P/D split of {nodes} × 8 × H200 ==" in out.stdout and expected in out.stdout
    assert "prefill replica(s) per decode replica" in out.stdout


def test_r1deploy_plan_of_an_inventory_splits_each_pd_set():
    out = _plan_cli("--inventory", "inventories/pd.py", "--json")
    assert out.returncode == 0, out.stderr
    splits = json.loads(out.stdout)["pd_splits"]
    assert list(splits) == ["P/D set r1-pd (1:1 prefill:decode in the inventory)"]
    assert splits["P/D set r1-pd (1:1 prefill:decode in the inventory)"]["replicas"] == 2
