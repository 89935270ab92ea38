"""CI fails on a package pin the index cannot install (issue 21 item 13): every pin of every prod
host's install plan (the hosts of the goldens, r1deploy/serving/install_plan.py) is resolved against
the package index with ONE `pip install --dry-run --no-deps` (metadata only, a few seconds). It
skips, saying why, only when the index cannot be reached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from r1deploy.fleet.inventory import load_specs
from r1deploy.serving.install_plan import install_plan

REPO = Path(__file__).resolve().parent.parent
# What a host's pip would meet: Linux x86_64 wheels for the prod OS's Python (Ubuntu 24.04).
TARGET = ["--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.12"]
UNREACHABLE = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
               "ConnectTimeoutError", "ProxyError", "Could not fetch URL", "No route to host")


def prod_pins() -> list[str]:
    from r1deploy.planner import plan_for_spec

    # The prod fleet and the P/D example (issue 25: nixl on the P/D sides).
    specs = [s for inv in ("prod.py", "pd.py") for s in load_specs(str(REPO / "inventories" / inv), cwd=str(REPO)).values()]
    pins: dict[str, None] = {}
    for spec in specs:
        hardware = spec.vllm.device != "cpu" and (spec.plan.gpu or spec.gpu.expected_model)
        pins.update(dict.fromkeys(install_plan(spec, plan_for_spec(spec) if hardware else None)))
    return list(pins)


def test_issue21_item13_the_install_plan_pins_what_the_roles_install():
    pins = prod_pins()
    assert "vllm==0.26.0" in pins and "vllm-router==0.1.17" in pins and "nixl==1.5.1" in pins
    assert not [p for p in pins if p.split("==")[0].replace("_", "-") in ("deep-gemm", "deep-ep")]


def test_issue21_item13_every_pin_of_every_prod_host_exists_on_the_index(tmp_path):
    pins = prod_pins()
    report = tmp_path / "report.json"
    # --isolated: the index pip reaches by default, not this machine's local wheelhouses.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    cert = os.environ.get("PIP_CERT")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--isolated", "--disable-pip-version-check", "--dry-run",
         "--no-deps", "--ignore-installed", "--quiet", "--retries", "1", "--timeout", "20",
         *(["--cert", cert] if cert else []), *TARGET, "--target", str(tmp_path / "never-written"),
         "--report", str(report), *pins],
        capture_output=True, text=True, timeout=300, env=env)
    said = done.stdout + done.stderr
    if done.returncode and any(word in said for word in UNREACHABLE):
        pytest.skip(f"the package index cannot be reached from here: {said.strip().splitlines()[-1][:200]}")
    assert done.returncode == 0, f"a pinned package cannot be installed from the index:\n{said[-3000:]}"
    resolved = {(i["metadata"]["name"].lower().replace("_", "-"), i["metadata"]["version"])
                for i in json.loads(report.read_text())["install"]}
    assert len(resolved) == len(pins), (sorted(resolved), pins)
