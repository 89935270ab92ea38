"""A newcomer's first hour (issue 21 item 16): a mistake on the command line is one clear line on
stderr and a non-zero exit, never a traceback, and nonsense is refused rather than planned or served."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from r1deploy.cli import main

REPO = Path(__file__).resolve().parent.parent


def run(argv: list[str], capsys) -> tuple[int, str]:
    """`r1deploy ARGV` through its entry point, as the shell would see it (SystemExit("msg") exits 1)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    return code, out.err.strip()


PLAN = ["plan", "--model", "DeepSeek-R1", "--gpu", "H200", "--gpus", "8"]


@pytest.mark.parametrize("argv, says", [
    (PLAN + ["--nodes", "0"], "nodes 0: must be at least 1"),  # was ZeroDivisionError
    (PLAN + ["--gpu-memory-utilization", "1.5"], "gpu_memory_utilization 1.5"),  # said FITS
    (PLAN + ["--gpus", "0"], "gpus_per_node 0: must be at least 1"),
    (PLAN + ["--tp", "0"], "tensor_parallel_size 0"),  # said FITS
])
def test_issue_21_item_16_plan_refuses_nonsense_as_bad_input(argv, says, capsys):
    code, err = run(argv, capsys)
    assert code == 2 and err.startswith(f"r1deploy plan: {says}") and "\n" not in err, err


def test_issue_21_item_16_dashboard_into_a_directory_it_cannot_make(capsys):
    code, err = run(["dashboard", "--out", "/proc/x"], capsys)  # was FileNotFoundError
    assert code == 1 and err == "r1deploy dashboard: cannot write /proc/x: No such file or directory"


def test_issue_21_item_16_smoke_with_a_missing_key_file_tries_nothing(capsys):
    code, err = run(["smoke", "http://127.0.0.1:9", "--model", "m", "--api-key-file", "/nonexistent"], capsys)
    assert code == 2 and err == "r1deploy smoke: --api-key-file /nonexistent: No such file or directory"


def test_issue_21_item_16_mirror_serve_refuses_a_root_that_is_not_there(tmp_path):
    """It served an empty hub from it (every pull a 404): a process, so that serving times out."""
    ran = subprocess.run([sys.executable, "-m", "r1deploy", "mirror", "serve", "--root", str(tmp_path / "nonexistent"),
                          "--port", "0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1 and not ran.stdout, ran.stdout
    assert ran.stderr.strip() == f"error: --root {tmp_path / 'nonexistent'} is not a directory"


@pytest.mark.parametrize("argv, module", [
    (["dashboard", "--out", "OUT"], "grafana_foundation_sdk"),
    (["bench", "--release", "r1", "--from-results", "OUT", "--out", "OUT"], "matplotlib"),
])
def test_issue_21_item_16_dashboard_and_bench_without_the_observe_extra(argv, module, capsys, monkeypatch, tmp_path):
    """Without `r1deploy[observe]` they raised ModuleNotFoundError (bench only after its whole sweep)."""
    monkeypatch.setitem(sys.modules, module, None)  # what importing an absent package does
    code, err = run([str(tmp_path) if a == "OUT" else a for a in argv], capsys)
    assert code == 2 and "\n" not in err, err
    assert f"{module} is not installed; it comes with the observe extra: pip install 'r1deploy[observe]'" in err
    assert not list(tmp_path.iterdir())  # nothing written before the refusal
