"""The lab: local Debian hosts (netns + overlay rootfs + systemd-nspawn + sshd) on a private bridge.

Everything the lab makes is named after LAB and recorded under STATE, so `down` (or the next
`up`) can find and remove it by name and pid, also after a crashed run. The only way out of a
host is an egress proxy on the bridge that allows the machine's own Debian mirror alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from lab import cpu, edge
from lab.access import LOGIN_USER, add_login_user, fingerprint, host_keys, write_known_hosts
from lab.build import build_model, build_rootfs, build_wheelhouse, cache_lock, debian_mirror, ssh_key
from lab.procs import CGROUP_ROOTS, log, ok, pid_of, sh, spawn, stop, wait_gone, wait_port
from lab.state import CACHE, LAB, STATE

# Several labs can coexist (e.g. CI's and a developer's): R1LAB_NAME and R1LAB_NET tell them apart.
NET = os.environ.get("R1LAB_NET", "10.77.0")
REPO = Path(__file__).resolve().parent.parent
BRIDGE = f"{LAB}0"
GW = f"{NET}.1"
PROXY_PORT = 3128
WHEELS_PORT = 8700
HUB_PORT = 8701


# ---------------------------------------------------------------- network + controller services

def ensure_bridge() -> None:
    if not ok("ip", "link", "show", BRIDGE):
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
    if GW not in sh("ip", "-4", "addr", "show", BRIDGE, capture_output=True, text=True).stdout:
        sh("ip", "addr", "add", f"{GW}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")


def ensure_services(hub_root: Path | None, wheelhouse: Path | None) -> None:
    """The apt egress proxy; the wheelhouse and Hub mirror servers unless given None."""
    if not pid_of("proxy"):
        conf = STATE / "tinyproxy.conf"
        mirror_host = urlparse(debian_mirror()).hostname
        (STATE / "proxy-allow").write_text(f"^{mirror_host.replace('.', '[.]')}$\n")
        conf.write_text("\n".join([
            "User root", "Group root", f"Port {PROXY_PORT}", f"Listen {GW}", f"Allow {NET}.0/24",
            "Timeout 120", "MaxClients 64", f"Filter \"{STATE / 'proxy-allow'}\"", "FilterDefaultDeny Yes",
            "FilterExtended Yes", "ConnectPort 443", "LogLevel Connect", "",
        ]))
        spawn("proxy", ["tinyproxy", "-d", "-c", str(conf)])
    if wheelhouse and not pid_of("wheels"):
        spawn("wheels", [sys.executable, "-m", "http.server", "--bind", GW, "--directory",
                         str(wheelhouse), str(WHEELS_PORT)])
    if hub_root and not pid_of("hub"):
        spawn("hub", [sys.executable, "-m", "r1deploy", "mirror", "serve", "--root", str(hub_root),
                      "--host", GW, "--port", str(HUB_PORT), "--log", str(STATE / "logs" / "hub-access.jsonl")])
    for port in (PROXY_PORT, *([WHEELS_PORT] if wheelhouse else []), *([HUB_PORT] if hub_root else [])):
        if not wait_port(GW, port, 20):
            raise SystemExit(f"lab service on {GW}:{port} did not come up; see {STATE / 'logs'}")


# ---------------------------------------------------------------- hosts

def host_ip(index: int) -> str:
    return f"{NET}.{10 + index}"


def host_names(nodes: int) -> list[tuple[str, str, str]]:
    """(name, ip, role): N serving nodes and one gateway."""
    hosts = [(f"node{i}", host_ip(i), "node") for i in range(1, nodes + 1)]
    hosts.append(("gateway", f"{NET}.9", "gateway"))
    return hosts


def _netns(name: str) -> str:
    return f"{LAB}-{name}"


def _veth(name: str) -> str:
    return f"{LAB}-{name}"[:15]


def _cgroup(name: str) -> str:
    return f"{LAB}/{name}"


def host_dir(name: str) -> Path:
    return STATE / "hosts" / name


def start_host(name: str, ip: str, rootfs: Path) -> None:
    d = host_dir(name)
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    merged = d / "root"
    if not os.path.ismount(merged):
        sh("mount", "-t", "overlay", f"{LAB}-{name}", "-o",
           f"lowerdir={rootfs},upperdir={d / 'upper'},workdir={d / 'work'}", str(merged))
    # apt goes out through this lab's egress proxy; the lab's own repos on the bridge are direct.
    (merged / "etc/apt/apt.conf.d/80r1lab-proxy").write_text(
        f'Acquire::http::Proxy "http://{GW}:{PROXY_PORT}";\nAcquire::http::Proxy::{GW} "DIRECT";\n')
    add_login_user(merged, name, ssh_key().with_suffix(".pub").read_text())
    ns, veth = _netns(name), _veth(name)
    if not Path(f"/run/netns/{ns}").exists():
        sh("ip", "netns", "add", ns)
    if not ok("ip", "link", "show", veth):
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", veth, "master", BRIDGE, "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    for root in CGROUP_ROOTS:
        (root / _cgroup(name)).mkdir(parents=True, exist_ok=True)
    # CAP_NET_ADMIN: the host firewall stage loads nftables (the guest's own network namespace).
    # The time namespace starts the guest's uptime near zero, so pyinfra's server.reboot sees a
    # reboot happen; nspawn exits 133 when the guest reboots, and the loop boots it again.
    loop = (
        "while :; do unshare --time --boottime -$(( $(cut -d. -f1 /proc/uptime) - 1 )) "
        f"systemd-nspawn -q -b -D {merged} --machine={name} --hostname={name} --register=no "
        f"--keep-unit --network-namespace-path=/run/netns/{ns} --capability=CAP_NET_ADMIN "
        "--console=passive; rc=$?; "
        "[ $rc -eq 133 ] || exit $rc; done"
    )
    spawn(f"host-{name}", ["bash", "-c", loop], cgroup=_cgroup(name))


def ssh_cmd(ip: str, *cmd: str, timeout: int = 10) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-i", str(ssh_key()), "-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}",
         "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={STATE / 'known_hosts'}",
         f"{LOGIN_USER}@{ip}", *cmd],
        capture_output=True, text=True, timeout=timeout + 20, check=False)


def host_ready(ip: str) -> bool:
    with contextlib.suppress(subprocess.TimeoutExpired):
        return ssh_cmd(ip, "true", timeout=3).returncode == 0
    return False


def _cgroup_pids(name: str) -> list[int]:
    pids: set[int] = set()
    for root in CGROUP_ROOTS:
        base = root / _cgroup(name)
        # os.walk, not rglob: the guest's systemd removes cgroups while we walk them (rglob raised).
        for sub, _, names in os.walk(base):
            if "cgroup.procs" in names:
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in Path(sub, "cgroup.procs").read_text().split())
    return sorted(pids)


def _poweroff(name: str) -> list[int]:
    """Ask the guest to power off (SIGTERM to its nspawn); returns the pids to wait for."""
    pids = _cgroup_pids(name)
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd-nspawn":
                os.kill(pid, signal.SIGTERM)
    return pids


def stop_host(name: str) -> None:
    """Power the guest off, then remove whatever is left of it."""
    pids = _poweroff(name)
    # A loaded machine can take a while to power a guest off; then nothing is polite any more.
    if not wait_gone(pids, 30):
        for _ in range(3):
            for pid in _cgroup_pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if wait_gone(_cgroup_pids(name), 10):
                break
    stop(f"host-{name}", timeout=1)
    for root in CGROUP_ROOTS:
        base = root / _cgroup(name)
        if base.exists():
            # Deepest first; os.walk skips what the guest's systemd removes meanwhile (rglob raised).
            for sub, _, _ in os.walk(base, topdown=False):
                if sub != str(base):
                    with contextlib.suppress(OSError):
                        os.rmdir(sub)
            with contextlib.suppress(OSError):
                base.rmdir()
    cpu.release(name)
    ns = _netns(name)
    if Path(f"/run/netns/{ns}").exists():
        for pid in sh("ip", "netns", "pids", ns, capture_output=True, text=True, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        sh("ip", "netns", "delete", ns, check=False)
    if ok("ip", "link", "show", _veth(name)):
        sh("ip", "link", "delete", _veth(name), check=False)
    merged = host_dir(name) / "root"
    for _ in range(5):  # stacked mounts come off one at a time
        if not os.path.ismount(merged):
            break
        if not ok("umount", str(merged)):
            sh("umount", "-l", str(merged), check=False)
    shutil.rmtree(host_dir(name), ignore_errors=True)


def known_host_names() -> set[str]:
    names = {p.name for p in (STATE / "hosts").glob("*")} if (STATE / "hosts").exists() else set()
    names |= {p.name for p in (CGROUP_ROOTS[0] / LAB).glob("*") if p.is_dir()} if (CGROUP_ROOTS[0] / LAB).exists() else set()
    names |= {ns.split()[0].removeprefix(f"{LAB}-") for ns in
              sh("ip", "netns", "list", capture_output=True, text=True).stdout.splitlines()
              if ns.startswith(f"{LAB}-")}
    return names


# ---------------------------------------------------------------- commands

def up(nodes: int, hosts_only: bool = False) -> dict:
    """hosts_only: the hosts and the apt proxy, without the serving stack's wheelhouse, model and
    Hub mirror (labs that provision hosts only, e.g. the SIMULATED GPU hosts of test_gpu_lab)."""
    STATE.mkdir(parents=True, exist_ok=True)
    with cache_lock():  # labs coming up at once (CI's and the GPU lab's) build the shared cache once
        rootfs = build_rootfs()
        wheelhouse = None if hosts_only else build_wheelhouse()
        model = None if hosts_only else build_model()
    ensure_bridge()
    ensure_services(None if hosts_only else CACHE / "hub", wheelhouse)
    wanted = host_names(nodes)
    write_known_hosts(STATE / "known_hosts", rootfs, [ip for _, ip, _ in wanted])
    for extra in known_host_names() - {n for n, _, _ in wanted}:
        log(f"removing {extra} (not in this lab)")
        stop_host(extra)
    started = []
    for name, ip, _ in wanted:
        if pid_of(f"host-{name}") and os.path.ismount(host_dir(name) / "root"):
            # A host started before labs had a login user gets it in place (keeps what is deployed).
            add_login_user(host_dir(name) / "root", name, ssh_key().with_suffix(".pub").read_text())
            if host_ready(ip):
                continue
        stop_host(name)  # leftovers of an earlier run, if any
        start_host(name, ip, rootfs)
        started.append((name, ip))
    deadline = time.monotonic() + 90
    for name, ip in started:
        while not host_ready(ip):
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} ({ip}) not reachable over SSH; see {STATE / 'logs' / f'host-{name}.log'}")
            time.sleep(0.3)
    cores = cpu.host_cores()
    for name, _, _ in wanted:  # also hosts kept from an earlier `up`
        cpu.place(name, _cgroup_pids(name), cores)
    info = {
        "hosts": [{"name": n, "ip": ip, "role": role} for n, ip, role in wanted],
        "ssh_key": str(ssh_key()),
        "login_user": LOGIN_USER,
        "known_hosts": str(STATE / "known_hosts"),
        "host_key_fingerprints": {kind: fingerprint(key) for kind, key in host_keys(rootfs)},
        "bridge_ip": GW,
        "host_cpu_cap": cores,
    }
    if not hosts_only:
        info |= {
            "wheels_url": f"http://{GW}:{WHEELS_PORT}/",
            "hub_url": f"http://{GW}:{HUB_PORT}",
            "hub_access_log": str(STATE / "logs" / "hub-access.jsonl"),
            "model": model,
            "kv_space_gib": 1,
        }
        info["edge"] = edge.ensure(info)  # CA, gateway certificate, API keys (lab/edge.py)
    (STATE / "lab.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"up: {', '.join(f'{n} {ip}' for n, ip, _ in wanted)} (started {len(started)})")
    return info


def down() -> None:
    names = sorted(known_host_names())
    for name in names:  # every guest shuts down at once, then each is cleaned up
        _poweroff(name)
    for name in names:
        stop_host(name)
    for svc in ("hub", "wheels", "proxy"):
        stop(svc)
    for root in CGROUP_ROOTS:
        with contextlib.suppress(OSError):
            (root / LAB).rmdir()
    cpu.release()
    if ok("ip", "link", "show", BRIDGE):
        sh("ip", "link", "delete", BRIDGE)
    (STATE / "lab.json").unlink(missing_ok=True)
    left = leftovers()
    if left:
        raise SystemExit("lab down left these behind:\n  " + "\n  ".join(left))
    log("down: nothing of the lab is left")


def leftovers() -> list[str]:
    """Everything of the lab that still exists on this machine (empty after a clean down)."""
    found = [f"netns {n}" for n in sh("ip", "netns", "list", capture_output=True, text=True).stdout.split()
             if n.startswith(f"{LAB}-")]
    links = sh("ip", "-o", "link", "show", capture_output=True, text=True).stdout
    found += [f"link {ln.split(':')[1].strip().split('@')[0]}" for ln in links.splitlines()
              if f" {LAB}" in ln]
    found += [f"mount {ln.split()[1]}" for ln in Path("/proc/mounts").read_text().splitlines()
              if ln.split()[1].startswith(f"{STATE}/")]
    found += [f"cgroup {root / LAB}" for root in CGROUP_ROOTS if (root / LAB).exists()]
    found += cpu.leftover()
    found += [f"process {svc} pid {pid_of(svc)}" for svc in ("hub", "wheels", "proxy") if pid_of(svc)]
    for pid_dir in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            cmdline = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if f"{STATE}/hosts/" in cmdline:
                found.append(f"process {pid_dir.name}: {cmdline[:80]}")
    return found


def status() -> int:
    info_file = STATE / "lab.json"
    if not info_file.exists():
        print("lab is down")
        return 1
    info = json.loads(info_file.read_text())
    bad = 0
    print(f"{'host':10} {'ip':12} {'role':8} {'pid':>7}  systemd")
    for h in info["hosts"]:
        pid = pid_of(f"host-{h['name']}")
        state = "unreachable"
        with contextlib.suppress(subprocess.TimeoutExpired):
            r = ssh_cmd(h["ip"], "systemctl", "is-system-running", timeout=3)
            state = r.stdout.strip() or state
        bad += state not in ("running", "degraded")
        print(f"{h['name']:10} {h['ip']:12} {h['role']:8} {pid or '-':>7}  {state}")
    for svc in ("proxy", "wheels", "hub"):
        print(f"service {svc:8} pid {pid_of(svc) or 'DOWN'}")
    return 1 if bad else 0


def report() -> int:
    return edge.report(json.loads((STATE / "lab.json").read_text()))


def main(argv: list[str] | None = None) -> int:
    if os.geteuid() != 0:
        raise SystemExit("the lab needs root (namespaces, mounts, systemd-nspawn)")
    p = argparse.ArgumentParser(prog="lab", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="build what is missing and start N node hosts + a gateway host")
    u.add_argument("--nodes", type=int, default=2)
    u.add_argument("--hosts-only", action="store_true",
                   help="hosts and apt proxy only: no wheelhouse, model or Hub mirror (GPU host labs)")
    sub.add_parser("down", help="stop and remove every host, mount, namespace, cgroup, link and process")
    sub.add_parser("status", help="show hosts and lab services")
    sub.add_parser("build", help="build the cached rootfs, wheelhouse and tiny model only")
    sub.add_parser("report", help="smoke-test nodes and gateway; print the URL and the curl a user runs")
    args = p.parse_args(argv)
    if args.cmd == "up":
        info = up(args.nodes, hosts_only=args.hosts_only)
        print(json.dumps(info, indent=2))
    elif args.cmd == "down":
        down()
    elif args.cmd == "build":
        with cache_lock():
            build_rootfs(), build_wheelhouse(), build_model()
    elif args.cmd == "report":
        return report()
    else:
        return status()
    return 0


if __name__ == "__main__":
    sys.exit(main())
