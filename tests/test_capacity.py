"""Issue 22 item 1: the R1-like workload, the SLO capacity search and the load generator."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from r1deploy.observe import capacity, loadgen, workload
from r1deploy.observe.capacity import RepeatResult, SloTarget


def _rep(rate, ttft, tpot, failed=0):
    return RepeatResult(rate, 30, failed, ttft / 2, ttft, tpot / 2, tpot)


def synthetic(true_capacity, noise=(1.0, 1.0, 1.0)):
    """A server whose p99s cross the SLO at true_capacity (TPOT binds), with repeat-to-repeat noise."""
    def measure(rate):
        load = rate / true_capacity
        return [_rep(rate, 300 * load * n, 40 * load * n) for n in noise]
    return measure


def test_issue22_item2_search_brackets_and_bisects_within_bounded_points():
    s = capacity.search(synthetic(6.0), start=2.0, slo=SloTarget(1000, 50), max_points=6, tolerance=0.1)
    rates = [p.rate for p in s.points]
    assert rates[:3] == [2.0, 4.0, 8.0]  # doubling while it passes
    assert not s.points[2].passed
    assert len(s.points) <= 6
    lo, hi = s.bracket()
    assert lo <= 7.5 < hi and s.capacity() == lo
    assert lo >= 6.0  # within a bisection or two of the truth


def test_issue22_item2_search_halves_when_the_start_fails_and_reports_zero_when_nothing_passes():
    s = capacity.search(synthetic(0.9), start=4.0, max_points=4)
    assert [p.rate for p in s.points][:3] == [4.0, 2.0, 1.0]
    assert s.capacity() == pytest.approx(s.bracket()[0])
    never = capacity.search(lambda r: [_rep(r, 5000, 200)] * 3, start=1.0, max_points=3)
    assert never.capacity() == 0.0 and len(never.points) == 3


def test_issue22_item1_fine_growth_from_a_prior_resolves_the_capacity_within_five_percent():
    """Issue 22 (session 21, item a): doubling from a guess left brackets of [2, 4] and [6, 12]; from a
    prior, steps of 10 % and bisection to 5 % resolve a capacity in a few points."""
    s = capacity.search(synthetic(5.6), start=6.6, slo=SloTarget(1000, 50), max_points=5, tolerance=0.05, growth=1.1)
    rates = [p.rate for p in s.points]
    assert rates[:2] == [6.6, 7.26] and s.points[0].passed and not s.points[1].passed
    lo, hi = s.bracket()
    assert hi / lo - 1 <= 0.05 and lo <= 7.0 < hi  # synthetic(5.6): TPOT crosses 50 ms at 7.0
    assert len(s.points) <= 3
    down = capacity.search(synthetic(4.0), start=6.6, max_points=5, tolerance=0.05, growth=1.1)
    assert [p.rate for p in down.points][:2] == [6.6, 6.0]


def test_issue22_item2_a_point_passes_on_its_median_repeat_and_fails_on_any_failed_request():
    slo = SloTarget(1000, 50)
    assert capacity.judge([_rep(1, 900, 45), _rep(1, 2000, 45), _rep(1, 800, 40)], slo)  # one noisy repeat
    assert not capacity.judge([_rep(1, 900, 55), _rep(1, 2000, 60), _rep(1, 800, 40)], slo)
    assert not capacity.judge([_rep(1, 100, 10), _rep(1, 100, 10, failed=1), _rep(1, 100, 10)], slo)


def test_issue22_item2_summary_and_ratio_carry_the_spread():
    a = capacity.search(synthetic(8.0, (0.9, 1.0, 1.1)), start=2.0, max_points=5)
    b = capacity.search(synthetic(2.0, (0.9, 1.0, 1.1)), start=2.0, max_points=5)
    sa, sb = capacity.summary(a, "a"), capacity.summary(b, "b")
    point = sa["points"][0]
    assert point["repeats"] == 3 and point["ttft_p99_ms"]["min"] < point["ttft_p99_ms"]["max"]
    r = capacity.ratio(sa, sb)
    assert r["low"] <= r["ratio"] <= r["high"] and r["ratio"] > 2
    json.dumps(sa)


def test_issue22_item2_multi_turn_chats_share_the_system_prompt_and_grow_their_history():
    wl = workload.multi_turn(3, turns=3, system_len=64, user_len=8, answer_len=16, seed=7)
    assert len(wl.requests) == 9
    first, later = wl.requests[0], wl.requests[3]  # chat 0, turns 0 and 1
    assert first.session == later.session and later.turn == 1
    assert later.prompt[:len(first.prompt)] == first.prompt  # the history is resent
    assert len(later.prompt) == len(first.prompt) + 16 + 8
    assert all(r.prompt[:64] == first.prompt[:64] for r in wl.requests)  # one shared system prompt
    assert workload.multi_turn(3, turns=3, system_len=64, seed=7) == workload.multi_turn(3, turns=3, system_len=64, seed=7)
    rnd = workload.random_workload(5, 1024, 256, seed=1)
    assert {len(r.prompt) for r in rnd.requests} == {1024} and rnd.requests[0].max_tokens == 256


class _SseServer:
    """tests/sse_server.py in its own process: a real HTTP server streaming `tokens` SSE chunks."""

    def __init__(self, tmp_path, tokens=5, gap_s=0.01):
        self.file = tmp_path / "bodies.jsonl"
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("sse_server.py")), str(tokens),
                                      str(gap_s), str(self.file)], stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())

    @property
    def bodies(self):
        return [json.loads(x) for x in self.file.read_text().splitlines()]


@pytest.fixture
def sse(tmp_path):
    servers = []

    def make(**kw):
        servers.append(_SseServer(tmp_path, **kw))
        return servers[-1]
    yield make
    for s in servers:
        s.proc.kill()
        s.proc.wait()


def test_issue22_item2_loadgen_measures_ttft_and_tpot_over_a_real_stream(sse):
    srv = sse(tokens=5, gap_s=0.02)
    wl = workload.multi_turn(2, turns=2, system_len=16, user_len=4, answer_len=4, output_len=5)
    t = time.monotonic()
    reps = loadgen.measure_point(f"http://127.0.0.1:{srv.port}", "m", wl, rate=40, repeats=2, window_s=0.5,
                                 lead_s=0.2, slo=SloTarget(1000, 50))
    assert time.monotonic() - t < 5
    assert len(reps) == 2 and all(r.failed == 0 and r.requests > 0 for r in reps)
    assert all(15 <= r.ttft_p50_ms < 500 and 15 <= r.tpot_p50_ms < 100 for r in reps)
    body = srv.bodies[0]
    assert body["stream"] and body["ignore_eos"] and body["max_tokens"] == 5 and isinstance(body["prompt"][0], int)


def test_issue22_item2_loadgen_counts_refused_requests_as_failed():
    reps = loadgen.measure_point("http://127.0.0.1:9", "m", workload.random_workload(4, 8, 4), rate=50,
                                 repeats=1, window_s=0.3, lead_s=0.0)
    assert reps[0].failed == reps[0].requests > 0
    assert not capacity.judge(reps, SloTarget())


def test_issue22_item2_bench_capacity_cli_writes_the_search_and_its_spread(tmp_path, sse):
    from r1deploy.cli import main

    srv = sse(tokens=4, gap_s=0.005)
    rc = main(["bench", "--capacity", "--no-warmup", "--base-url", f"http://127.0.0.1:{srv.port}", "--model", "m",
               "--release", "r1", "--out", str(tmp_path), "--start-rate", "20", "--max-points", "2",
               "--window-s", "0.3", "--lead-s", "0.1", "--slo-ttft-ms", "1000", "--slo-tpot-ms", "50",
               "--output-len", "4", "--workload", "random"])
    result = json.loads((tmp_path / "r1" / "capacity.json").read_text())
    assert rc == 0 and result["capacity_req_s"] == 40 and [p["rate"] for p in result["points"]] == [20, 40]
    assert all(p["repeats"] == 3 for p in result["points"])
