"""The gateway's edge stage (roles/gateway/edge.py) planned against hosts whose facts are given
(tests/factharness.py): nginx is reloaded on state — whenever the files on disk are not the ones it
last loaded — not only when this run changed them. Issue 21 item 10."""

from __future__ import annotations

import hashlib

import pytest
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import Link, Sha256File
from pyinfra.facts.server import Command
from r1deploy.roles.gateway.edge import SANDBOX, nginx_edge
from r1deploy.roles.gateway.facts import EdgeLoaded

from r1deploy.drift import checks as dc
from r1deploy.serving import edge
from r1deploy.serving.render import render_template
from r1deploy.spec import spec_from_host_data
from tests.factharness import World, plan

GW = {"model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "model_revision": "a" * 40, "fleet_role": "gateway"}
RELOAD = "Edge | nginx: check and reload (graceful)"


@deploy("Edge")
def _edge():
    nginx_edge(spec_from_host_data("gw", GW))


def converged(loaded: str) -> World:
    """A gateway whose edge files are exactly what the spec renders (nothing to upload)."""
    spec = spec_from_host_data("gw", GW)
    content = {edge.SITE_CONF: edge.render_site(spec, "gw", False), edge.KEYS_CONF: edge.render_keys({}, None),
               SANDBOX: render_template("r1deploy-sandbox.conf.j2", host="gw"), f"{edge.NGINX_DIR}/x": ""}
    return World(facts={EdgeLoaded: loaded, Link: None, DebPackages: {"nginx": {"1.26"}}, Command: "",
                        Sha256File: lambda path: hashlib.sha256(content[path].encode()).hexdigest()},
                 files=content, services={"nginx": (True, True)})


def reload_wanted(loaded: str) -> bool:
    """Plan the stage, let every operation before the reload 'run' without a change, then ask the
    reload's condition (what pyinfra evaluates at execution)."""
    state, _ = plan(_edge, {"gw": ({}, converged(loaded))})
    target = state.inventory.get_host("gw")
    for op_hash in state.get_op_order():
        name = sorted(state.op_meta[op_hash].names)[0]
        data = state.ops[target][op_hash]
        if name == RELOAD:
            conditions = data.global_arguments.get("_if") or []
            return all(c() for c in (conditions if isinstance(conditions, list) else [conditions]))
        data.operation_meta.set_complete(True, [], None)
    raise AssertionError("no reload operation")


@pytest.mark.parametrize("loaded, wanted", [("stale", True), ("unknown", True), ("loaded", False)])
def test_issue21_item10_nginx_reloads_files_it_has_not_loaded_even_when_this_run_changed_nothing(loaded, wanted):
    """`nginx -t` failed last time (or the controller died before the reload): the files are on disk,
    this run uploads nothing, and still the reload must run — else a revoked key keeps working."""
    assert reload_wanted(loaded) is wanted


def test_issue21_item10_the_reload_records_what_it_loaded_only_after_it_succeeded():
    _, commands = plan(_edge, {"gw": ({}, converged("stale"))})
    reload = next(c for c in commands["gw"] if c.startswith(f"[{RELOAD}]"))
    assert reload.index("nginx -t -q && systemctl reload nginx && ") < reload.index(edge.LOADED_MARK)
    assert f"> {edge.LOADED_MARK}.next && mv {edge.LOADED_MARK}.next {edge.LOADED_MARK}" in reload


def test_issue21_item10_drift_tells_an_edge_nginx_has_not_loaded():
    assert [f.ok for f in dc.edge_loaded("gw", "loaded")] == [True]
    stale = dc.edge_loaded("gw", "stale")[0]
    assert stale.ok is False and "converge to reload" in stale.detail
    assert dc.edge_loaded("gw", "unknown")[0].ok is None
    assert EdgeLoaded().process(["stale"]) == "stale" and EdgeLoaded().process(["what"]) == "unknown"


def test_edge_loaded_fact_compares_the_files_with_the_record():
    command = EdgeLoaded().command()
    assert f"cmp -s - {edge.LOADED_MARK}" in command and edge.KEYS_CONF in command
