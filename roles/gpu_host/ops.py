"""Operations of the GPU role that must decide at execute time, on facts read then.

pyinfra re-runs an operation's body when executing, with facts read at that moment: the
exact version in the (just configured) repository, the driver just installed, the kernel
module loaded after a reboot. At prepare time on a fresh host those are unknown, so the
body yields a comment saying what will be decided. Host-stopping outcomes are yielded as
Python commands returning False, which fails that host only (an exception would abort
the whole run).
"""

from __future__ import annotations

import time
from io import StringIO

from pyinfra import host, logger, state
from pyinfra.api import FunctionCommand, StringCommand, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import files
from r1deploy.roles.gpu_host import drain, facts
from r1deploy.roles.gpu_host.versions import VersionSkew, Want, follow, preferences

from r1deploy.gpu import amd, amd_gate, dpkg
from r1deploy.gpu.gate import Expectations, Observation, exit_code, render_table, run_gate

APT_INSTALL = ("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades "
               "--allow-change-held-packages -o Dpkg::Options::=--force-confdef "
               "-o Dpkg::Options::=--force-confold")


def _stop(state, host, message: str) -> bool:
    host.log_styled(message, fg="red", log_func=logger.error)
    return False


def stop_host(message: str) -> FunctionCommand:
    return FunctionCommand(_stop, (message,), {})


def host_platform(lookup, hosts: str, supported: str):
    """The host's OS as `lookup(ID, VERSION_ID)` knows it (platforms.py, rocm_platforms.py);
    a DeployError naming the host and its OS when `hosts` cannot run there."""
    meta = (host.get_fact(LinuxDistribution) or {}).get("release_meta") or {}
    platform = lookup(meta.get("ID"), meta.get("VERSION_ID"))
    if platform is None:
        raise DeployError(f"{host.name}: {hosts} must run {supported}, "
                          f"not {meta.get('PRETTY_NAME') or 'an unknown OS'}")
    return platform


def _installed(package: str, fact=facts.NvidiaPackages) -> str | None:
    found = host.get_fact(fact).get(package)
    return found[0] if found else None


@operation()
def pinned_packages(packages: list[str], want: Want, pin_file: str, why: str,
                    leader: Want | None = None, follower: str | None = None, remove: list[str] | None = None,
                    installed_fact=facts.NvidiaPackages):
    """Install `packages` at one exact version, pin it in `pin_file` and apt-mark hold it.

    + want: the version rule (of packages[0]); with `leader`, the version is instead the
      one whose upstream equals what `leader` resolves to (fabric manager follows the driver)
    + follower: a package that must reach this exact upstream version next; checked before
      installing anything, so a skew stops the host with the old driver still in place
    + remove: packages to remove in the same apt transaction (another branch or flavor)
    + installed_fact: the fact listing this vendor's installed packages
    """
    names = sorted({*packages, *([leader.package] if leader else []), *([follower] if follower else [])})
    available = host.get_fact(facts.AptVersions, packages=names)
    installed = host.get_fact(installed_fact)
    offered, current_version = available.get(want.package, []), _installed(want.package, installed_fact)
    if leader:
        leader_version = leader.pick(available.get(leader.package, []), _installed(leader.package))
        try:
            version = follow(want, leader_version, offered, current_version)
        except VersionSkew as exc:
            yield stop_host(f"version skew: {exc}")
            return
    else:
        version = want.pick(offered, current_version)
    if follower and version:
        try:
            follow(Want(follower), version, available.get(follower, []), _installed(follower))
        except VersionSkew as exc:
            yield stop_host(f"version skew: {exc}")
            return
    if version is None:
        if state.is_executing:
            yield stop_host(f"no {want.describe()} in the configured apt repositories")
        else:
            yield StringCommand(f"# {' '.join(packages)}: pin {want.describe()}, version read from the "
                                "repository when executing")
        return

    yield from files.put._inner(src=StringIO(preferences(packages, version, why)), dest=pin_file,
                                user="root", group="root", mode="644")
    current = [installed.get(p) for p in packages]
    stale = [p for p in remove or [] if p in installed]
    if stale or any(c is None or c[0] != version for c in current):
        yield StringCommand(APT_INSTALL, *[f"{p}={version}" for p in packages], *[f"{p}-" for p in stale])
        yield StringCommand("apt-mark hold", *packages)
    elif not all(held for _, held in current):
        yield StringCommand("apt-mark hold", *packages)


@operation(is_idempotent=False)
def reboot_into_driver(driver_package: str, expected: Want, allow_reboot: bool,
                       delay: int = 30, reboot_timeout: int = 900, simulated: bool = False,
                       services: tuple[str, ...] = (), gate: tuple | None = None):
    """Reboot when the loaded kernel module is not the installed driver; with allow_reboot
    False, report "reboot required" and stop this host instead. The reboot is the node's
    rollout turn (roles/gpu_host/drain.py): `services` start and `gate` (the gate's arguments)
    must pass after it, before the node rejoins."""
    loaded = host.get_fact(facts.LoadedDriver, simulated=simulated).version
    installed = _installed(driver_package)
    if state.is_executing:
        target = dpkg.upstream_version(installed) if installed else None
    else:
        picked = expected.pick(host.get_fact(facts.AptVersions, packages=[driver_package]).get(driver_package, []),
                               installed)
        target = dpkg.upstream_version(picked) if picked else None
    why = f"running kernel module {loaded or 'none'}, installed driver {target or expected.describe()}"
    yield from _reboot_unless_loaded(loaded, target, f"{driver_package} is not installed; cannot load a driver",
                                     why, allow_reboot, delay, reboot_timeout, services, gate)


def _reboot_unless_loaded(loaded: str | None, target: str | None, missing: str, why: str,
                          allow_reboot: bool, delay: int, reboot_timeout: int,
                          services: tuple[str, ...] = (), gate: tuple | None = None):
    """Nothing when the loaded module is the target; stop the host (`missing`) when executing
    with no driver installed; else reboot into it (or stop: reboot required)."""
    if target is not None and loaded == target:
        return
    if state.is_executing and target is None:
        yield stop_host(missing)
        return
    yield from _reboot(why, allow_reboot, delay, reboot_timeout, services, gate)


def _reboot(why: str, allow_reboot: bool, delay: int, reboot_timeout: int,
            services: tuple[str, ...] = (), gate: tuple | None = None):
    if not allow_reboot:
        yield stop_host(f"reboot required ({why}); gpu_allow_reboot is False, stopping this host")
        return
    yield StringCommand(f"# reboot: {why}")
    # The node's rollout turn (issue 21 item 1): refuse an outage, drain, reboot, then gate,
    # healthy and rejoin before the next batch's operation.
    yield from drain.before_reboot(host, why)
    boot: list[str] = []
    yield FunctionCommand(_remember_boot, (boot,), {})
    yield StringCommand("( sleep 1 && reboot ) </dev/null >/dev/null 2>&1 &")
    yield FunctionCommand(_wait_for_new_boot, (boot, delay, reboot_timeout), {})
    if gate is not None:
        yield from drain.after_reboot(host, list(services), gate)


@operation(is_idempotent=False)
def reboot_into_amdgpu(want: Want, allow_reboot: bool, simulated: bool = False,
                       delay: int = 30, reboot_timeout: int = 900, gate: tuple | None = None):
    """Reboot when the loaded amdgpu module is not the one the installed amdgpu-dkms builds
    (or is the kernel's own); with allow_reboot False, stop this host instead."""
    loaded = amd.parse_module(host.get_fact(facts.AmdSmi, probe="module", simulated=simulated))
    installed = _installed(want.package, facts.AmdPackages)
    if not state.is_executing:
        installed = want.pick(host.get_fact(facts.AptVersions, packages=[want.package]).get(want.package, []),
                              installed)
    target = amd.dkms_module_version(installed)
    why = f"running amdgpu {loaded or 'none'}, installed {want.package} builds {target or want.describe()}"
    yield from _reboot_unless_loaded(loaded, target, f"{want.package} is not installed; cannot load amdgpu",
                                     why, allow_reboot, delay, reboot_timeout, (), gate)


@operation()
def user_in_groups(user: str, groups: list[str]):
    """`user` (created as a system user when absent) a member of `groups`."""
    current = host.get_fact(facts.UserGroups, user=user)
    if current is None:
        yield StringCommand("useradd --system --no-create-home --shell /usr/sbin/nologin", user)
        current = []
    missing = [g for g in groups if g not in current]
    if missing:
        # render is made by udev on most hosts, not on all (minimal images, containers)
        for group in missing:
            yield StringCommand(f"getent group {group} >/dev/null || groupadd --system {group}")
        yield StringCommand("usermod -a -G", ",".join(missing), user)


def _remember_boot(state, host, boot: list[str]) -> bool:
    boot.append(host.get_fact(facts.BootId))
    return True


def _wait_for_new_boot(state, host, boot: list[str], delay: int, timeout: int) -> bool:
    """Like server.reboot, but a new boot is a new kernel boot_id, not a smaller uptime:
    containers (the lab's simulated hosts) report the machine's uptime, never their own."""
    time.sleep(delay)
    host.disconnect()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        host.connect(show_errors=False)
        if host.connected and host.get_fact(facts.BootId) not in (None, boot[0]):
            return True
        time.sleep(5)
    host.log_styled(f"did not come back from the reboot within {timeout}s", fg="red", log_func=logger.error)
    return False


def _nvidia_observation(exp: Expectations, simulated: bool, python: str | None) -> Observation:
    return Observation(
        host.get_fact(facts.Gpus), host.get_fact(facts.LoadedDriver, simulated=simulated),
        host.get_fact(facts.GpuHealth), host.get_fact(facts.NvSwitches, simulated=simulated),
        host.get_fact(facts.FabricManagerState), host.get_fact(facts.NvLinkStatus),
        host.get_fact(facts.DcgmDiag) if exp.dcgm else None,
        host.get_fact(facts.GpuVitals) if exp.deep else None,
        host.get_fact(facts.KernelLog, simulated=simulated) if exp.deep else None,
        host.get_fact(facts.AllReduce, python=python) if exp.allreduce != "no" and python else None,
    )


def _amd_observation(exp: Expectations, simulated: bool, python: str | None) -> amd_gate.AmdObservation:
    out = {name: host.get_fact(facts.AmdSmi, probe=name, simulated=simulated) for name in amd.PROBES}
    out["kernel_log"] = host.get_fact(facts.KernelLog, simulated=simulated) if exp.deep else None
    dkms = host.get_fact(facts.AmdPackages).get("amdgpu-dkms")
    obs = amd_gate.AmdObservation.from_outputs(out, amd.dkms_module_version(dkms[0]) if dkms else None)
    if exp.allreduce != "no" and python:
        obs = amd_gate.AmdObservation(**{**obs.__dict__, "allreduce": host.get_fact(facts.AllReduce, python=python)})
    return obs


def gate_checks(expectations: Expectations, vendor: str = "nvidia", simulated: bool = False,
                python: str | None = None) -> list:
    """The gate's checks on facts read now (the GPU stage's gate and the drift check alike)."""
    if vendor == "amd":
        return amd_gate.run_gate(host.name, _amd_observation(expectations, simulated, python), expectations)
    return run_gate(host.name, _nvidia_observation(expectations, simulated, python), expectations)


def _gate(expectations: Expectations, vendor: str = "nvidia", simulated: bool = False,
          python: str | None = None) -> tuple[bool, str]:
    """Run the gate on facts read now: (passed, table)."""
    checks = gate_checks(expectations, vendor, simulated, python)
    return not exit_code(checks), render_table(checks)


@operation()
def verify_gpus(expectations: Expectations, vendor: str = "nvidia", simulated: bool = False,
                allreduce_python: str | None = None):
    """The verification gate on facts read when executing. A pass yields no command, so a
    converged host reports no change; a failure fails this host (an error, with the table)."""
    if not state.is_executing:
        return
    passed, table = _gate(expectations, vendor, simulated, allreduce_python)
    if passed:
        host.log(f"GPU gate passed:\n{table}")
    else:
        yield stop_host(f"GPU gate failed, not serving from this host:\n{table}")
