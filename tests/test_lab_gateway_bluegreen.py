"""Hitless router changes (issue 23 item 1) on the shared lab, under the load loop through nginx.

A converge that changes only the routing policy (`--data gateway_policy=round_robin`) starts the
standby colour of vllm-router beside the live one, proves it, moves nginx's upstream to it with a
graceful reload, drains and stops the old one: 0 failed requests, and the converge's report names
the switch and says 0 of N failed (5xx). The same converge again touches nothing. Back to the
inventory's policy is the same switch the other way (green -> blue), which leaves the lab as the
inventory says for the modules after this one (their router admin calls go to blue's port).
Each test prints its counts.

Not yet run on a lab: the lead runs it (`pytest -m "lab or lab_full" tests/test_lab_gateway_bluegreen.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from labharness import assert_no_user_saw_it, changed_ops, converge, ssh, under_load

from r1deploy.serving.edge import ROUTER_UPSTREAM

# not yet run on a lab: the lead runs it
pytestmark = [pytest.mark.lab, pytest.mark.lab_full]

GATEWAY = "gateway"
UNITS = {"blue": "vllm-router.service", "green": "vllm-router-green.service"}
POLICY = ["--data", "gateway_policy=round_robin"]


def _live(lab) -> str:
    """The colour nginx routes to, as the next converge reads it (nginx's upstream include)."""
    text = ssh(lab, GATEWAY, f"cat {ROUTER_UPSTREAM}").stdout
    return next(line.split(":", 1)[1].split()[0] for line in text.splitlines() if line.startswith("# Live colour:"))


def _argv(lab, colour: str) -> list[str]:
    """The colour's ExecStart as systemd loaded it (vllm-router renames its process: /proc has no argv)."""
    out = ssh(lab, GATEWAY, f"systemctl show -p ExecStart --value {UNITS[colour]}").stdout
    return out.replace(";", " ").split()


def _active(lab, colour: str) -> str:
    return ssh(lab, GATEWAY, f"systemctl is-active {UNITS[colour]}").stdout.strip()


def _switch_report(reports: Path, old: str, new: str) -> dict:
    windows = json.loads(next(reports.glob("gateway-*.json")).read_text())
    found = [w for w in windows if any(f"router {old} -> {new}" in c for c in w["changes"])]
    assert len(found) == 1, windows
    return found[0]


def _switch_under_load(lab, tmp_path, old: str, new: str, *extra: str):
    assert _live(lab) == old
    done, seen = under_load(lab, lambda: converge(*extra, R1DEPLOY_REPORTS=str(tmp_path)))
    assert done.returncode == 0, done.out[-8000:]
    assert_no_user_saw_it(seen)
    window = _switch_report(tmp_path, old, new)
    print(f"switch {old} -> {new}: {window['summary']}")
    assert window["verdict"] == "ok" and window["failed"] == 0 and window["requests"] > 0, window
    assert f"router {old} -> {new}" in done.out and f"0 of {window['requests']} requests failed" in done.out
    assert _live(lab) == new and _active(lab, new) == "active" and _active(lab, old) != "active"
    return done


def test_a_policy_change_is_a_blue_green_switch_with_zero_failed_requests(lab, tmp_path):
    _switch_under_load(lab, tmp_path, "blue", "green", *POLICY)
    argv = _argv(lab, "green")
    assert argv[argv.index("--policy") + 1] == "round_robin" and argv[argv.index("--port") + 1] == "8082"


def test_the_same_converge_again_touches_nothing(lab):
    again = converge(*POLICY)
    assert again.returncode == 0, again.out[-6000:]
    assert changed_ops(again.out) == 0, again.out[-6000:]
    assert _live(lab) == "green" and _active(lab, "blue") != "active"


def test_back_to_the_inventorys_policy_is_a_switch_back_to_blue(lab, tmp_path):
    _switch_under_load(lab, tmp_path, "green", "blue")
    argv = _argv(lab, "blue")
    assert argv[argv.index("--policy") + 1] != "round_robin" and argv[argv.index("--port") + 1] == "8081"
