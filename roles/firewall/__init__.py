"""Firewall: the host firewall (nftables, Debian's package; issue 23 item 3), applied so that a
mistake cannot lock the operator out.

The ruleset (r1deploy/fleet/firewall.py) is staged, checked by the host's own `nft -c`, and loaded
only after a timed rollback is armed: a transient systemd timer that reloads the previous table
unless the controller disarms it over a FRESH SSH connection. pyinfra's own connection is
established, and `ct state established` would keep it alive under a ruleset that refuses every new
SSH login: only a new connection proves the operator can still get in. Then the load is recorded
(what drift compares the live table with) and /etc/nftables.conf carries it over a reboot.
"""

from __future__ import annotations

import hashlib
from io import StringIO

from pyinfra import host
from pyinfra.api import DeployError, StringCommand, deploy
from pyinfra.operations import apt, files, python, server, systemd
from r1deploy.roles._spec import host_spec
from r1deploy.roles.firewall.facts import FirewallState

from r1deploy.fleet.firewall import (
    CONF,
    FAMILY,
    ROLLBACK_UNIT,
    STATE_DIR,
    TABLE,
    FwHost,
    firewall_errors,
    render_ruleset,
)

STAGED = f"{STATE_DIR}/r1deploy.nft"
ROLLBACK = f"{STATE_DIR}/rollback.nft"
ROLLBACK_AFTER_S = 120  # time for the load and a fresh SSH login; the timer fires after it
DISARM = f"systemctl stop {ROLLBACK_UNIT}.timer && echo r1deploy-firewall-confirmed"


def fleet_firewall_hosts() -> list[FwHost]:
    return [FwHost(h.name, h.data.dict(), host_spec(h)) for h in host.inventory]


def monitor_name(hosts: list[FwHost]) -> str | None:
    from r1deploy.observe.monitor import FleetHost, monitor_host

    found = monitor_host([FleetHost(h.name, h.spec, h.address or h.name) for h in hosts])
    return found.name if found else None


def rendered() -> str:
    hosts = fleet_firewall_hosts()
    return render_ruleset(next(h for h in hosts if h.name == host.name), hosts, monitor_name(hosts))


def fresh_connection():
    """A new connection to this host with its inventory's connection data (not pyinfra's own)."""
    fresh = type(host.connector)(host.state, host)
    fresh.connect()
    return fresh


def confirm(connect=fresh_connection) -> None:
    """Disarm the rollback over a new SSH login; if that fails, the timer restores the old table."""
    why = ""
    try:
        conn = connect()
        ok, out = conn.run_shell_command(StringCommand(DISARM), _sudo=bool(host.data.get("_sudo")))
        conn.disconnect()
        if ok and "r1deploy-firewall-confirmed" in "\n".join(out.stdout_lines):
            return
        why = f"disarming over it failed: {out.stderr[-300:] if hasattr(out, 'stderr') else out}"
    except Exception as exc:  # noqa: BLE001 - any failure to log in anew is the signal
        why = f"{type(exc).__name__}: {exc}"
    raise DeployError(f"{host.name}: a new SSH login failed after the firewall load ({why}); the previous "
                      f"ruleset comes back by itself within {ROLLBACK_AFTER_S} s ({ROLLBACK_UNIT}.timer). "
                      "Check fleet_admin_networks (and fleet_host_ip) before the next converge.")


def _apply(text: str) -> None:
    sha = hashlib.sha256(text.encode()).hexdigest()
    server.shell(name="Firewall: check the ruleset (nft -c)", commands=[f"nft -c -f {STAGED}"])
    server.shell(name="Firewall: save the current table for the rollback", commands=[
        f"{{ echo 'table {FAMILY} {TABLE}'; echo 'delete table {FAMILY} {TABLE}'; "
        f"nft list table {FAMILY} {TABLE} 2>/dev/null || true; }} > {ROLLBACK}.new && mv {ROLLBACK}.new {ROLLBACK}"])
    server.shell(name=f"Firewall: arm the rollback ({ROLLBACK_AFTER_S} s)", commands=[
        f"systemctl stop {ROLLBACK_UNIT}.timer {ROLLBACK_UNIT}.service 2>/dev/null; "
        f"systemctl reset-failed {ROLLBACK_UNIT}.timer {ROLLBACK_UNIT}.service 2>/dev/null; "
        f"systemd-run --quiet --unit={ROLLBACK_UNIT} --on-active={ROLLBACK_AFTER_S} /usr/sbin/nft -f {ROLLBACK}"])
    server.shell(name="Firewall: load the ruleset (SSH rule first, one transaction)", commands=[f"nft -f {STAGED}"])
    python.call(name="Firewall: confirm over a fresh SSH connection (else it rolls back)", function=confirm)
    server.shell(name="Firewall: record the loaded table (drift compares it)", commands=[
        f"nft list table {FAMILY} {TABLE} > {STATE_DIR}/loaded.nft && echo {sha} > {STATE_DIR}/loaded.sha256"])


def _remove(state: dict) -> None:
    """fleet_firewall off: r1deploy's table goes (other tables stay), and with it the boot file."""
    if state.get("live") is not None:
        server.shell(name="Firewall off: delete r1deploy's table", commands=[f"nft delete table {FAMILY} {TABLE}"])
    if state.get("render_sha"):  # ours was loaded at boot from /etc/nftables.conf: not any more
        systemd.service(name="Firewall off: nftables.service not at boot", service="nftables.service",
                        running=None, enabled=False)
    files.file(name="Firewall off: no record of a load", path=f"{STATE_DIR}/loaded.sha256", present=False)


def needs_load(state: dict, text: str) -> bool:
    """A load when today's render was not the last confirmed one, or the live table is not it."""
    sha = hashlib.sha256(text.encode()).hexdigest()
    return state.get("render_sha") != sha or state.get("live") is None or state.get("live") != state.get("loaded")


@deploy("Firewall")
def firewall() -> None:
    spec = host_spec()
    if not spec.fleet.firewall_on:
        _remove(host.get_fact(FirewallState))
        return
    # An inventory loaded without its validate_before_connecting line still cannot close SSH.
    problems = [e for e in firewall_errors(fleet_firewall_hosts()) if e.host == host.name]
    if problems:
        raise DeployError(f"{host.name}: {problems[0].key}: {problems[0].reason}")
    text = rendered()
    # netbase: /etc/protocols, where nft resolves `ipv6-icmp` (a minimal image has none: "Could not
    # resolve protocol name", seen on the lab).
    apt.packages(name="nftables (Debian)", packages=["nftables", "netbase"], no_recommends=True)
    files.directory(name=f"Firewall {STATE_DIR}", path=STATE_DIR, mode="700")
    files.put(name=f"Firewall: stage {STAGED}", dest=STAGED, src=StringIO(text), mode="600")
    if needs_load(host.get_fact(FirewallState), text):
        _apply(text)
    files.put(name=f"Firewall: {CONF} (loaded at boot)", dest=CONF, src=StringIO(text), mode="644")
    # Enabled for the boot only: its stop (and so a restart) flushes every table of the host.
    systemd.service(name="nftables.service enabled at boot", service="nftables.service", running=None,
                    enabled=True)
