"""`r1deploy bench --capacity`: the SLO capacity of a node or the gateway on an R1-like workload.

    r1deploy bench --capacity --base-url http://10.20.0.10:8080 --model DeepSeek-R1 \\
        --workload multi-turn --start-rate 4 --slo-ttft-ms 1000 --slo-tpot-ms 50

Each point runs after the project's warm-up (python -m r1deploy.serving.warmup, once before the
search) and holds --repeats windows of one continuous Poisson stream (r1deploy/observe/loadgen.py);
the search doubles, halves and bisects up to --max-points points (r1deploy/observe/capacity.py).
Writes capacity.json (every point, every repeat, the spread) and capacity.png under --out/<release>.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from r1deploy.observe import capacity, loadgen, workload


def _warm_up(args: argparse.Namespace) -> None:
    from r1deploy.serving import warmup
    from r1deploy.spec import RolloutSection

    r = RolloutSection()
    warmup.main([args.base_url, "--model", args.served_name or args.model, "--sampling", json.dumps(r.warmup_sampling),
                 "--concurrency", str(r.warmup_concurrency), "--long-tokens", str(r.warmup_long_prompt_tokens),
                 "--max-tokens", str(r.warmup_max_tokens)] + (["--api-key-file", args.api_key_file]
                                                              if args.api_key_file else []))


def _headers(args: argparse.Namespace) -> dict[str, str]:
    from r1deploy.serving.smoke import read_key

    key = read_key(args.api_key_file) if args.api_key_file else None
    return {"Authorization": f"Bearer {key}"} if key else {}


def run(args: argparse.Namespace, out: Path) -> dict:
    slo = capacity.SloTarget(args.slo_ttft_ms, args.slo_tpot_ms)
    if not args.no_warmup:
        _warm_up(args)
    name = args.served_name or args.model

    def measure(rate: float) -> list[capacity.RepeatResult]:
        n = loadgen.arrivals_needed(rate, args.repeats, args.window_s, args.lead_s)
        wl = workload.make(args.workload, n, seed=args.seed + int(rate * 1000), input_len=args.input_len,
                           output_len=args.output_len)
        return loadgen.measure_point(args.base_url, name, wl, rate, repeats=args.repeats, window_s=args.window_s,
                                     lead_s=args.lead_s, seed=args.seed, slo=slo, headers=_headers(args),
                                     ca_file=args.ca_file)

    def on_point(p: capacity.Point) -> None:
        lo, hi = p.spread("tpot_p99_ms")
        print(f"capacity: {p.rate:g} req/s {'pass' if p.passed else 'FAIL'}: TTFT p99 {p.median('ttft_p99_ms'):.0f} ms, "
              f"TPOT p99 {p.median('tpot_p99_ms'):.1f} ms ({lo:.1f}-{hi:.1f})", file=sys.stderr, flush=True)

    s = capacity.search(measure, args.start_rate, slo, args.max_points, args.tolerance, on_point)
    result = {**capacity.summary(s, args.release), "workload": args.workload, "base_url": args.base_url}
    out.mkdir(parents=True, exist_ok=True)
    (out / "capacity.json").write_text(json.dumps(result, indent=1))
    return result


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--capacity", action="store_true", help="search the SLO capacity (highest Poisson rate within "
                   "the TTFT and TPOT p99 SLO) instead of the concurrency sweep")
    p.add_argument("--workload", choices=workload.NAMES, default="multi-turn")
    p.add_argument("--start-rate", type=float, default=2.0)
    p.add_argument("--max-points", type=int, default=6)
    p.add_argument("--tolerance", type=float, default=0.1)
    p.add_argument("--window-s", type=float, default=20.0, help="one repeat: arrivals in this window")
    p.add_argument("--lead-s", type=float, default=5.0, help="arrivals before the first window (not counted)")
    p.add_argument("--no-warmup", action="store_true")
