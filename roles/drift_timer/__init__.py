"""Drift timer: the drift check as a systemd timer + service on an ops host.

The ops host gets its own user and SSH key (made there; the private key never leaves it), a
pinned checkout of this repository (`git archive` of one commit, sent from the controller:
the ops host needs no access to a git server), a virtualenv with the controller's exact
versions of r1deploy's dependencies, and r1deploy-drift.{service,timer}. Every run writes
<home>/reports/drift/<run-id>/ and `latest`, and a Prometheus textfile.

Keys: the spec's `drift_*` (r1deploy.spec.DriftSection) and `install_*` for where pip gets
packages. The fleet must authorize the key this role logs (e.g. deploy/bootstrap.py with
fleet_admin_pubkey_file = that key) and `drift_known_hosts_file` must hold the fleet's host keys.
"""

from __future__ import annotations

import io
import subprocess
from importlib.metadata import version
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, pip, server, systemd
from r1deploy.roles._pip import pinned
from r1deploy.roles._secret import secret_file
from r1deploy.roles.base import pip_source_args

from r1deploy.serving.render import render_template
from r1deploy.spec import DriftSection, InstallSection, split_host_data

REPO = Path(__file__).resolve().parents[2]
SERVICE, TIMER = "r1deploy-drift.service", "r1deploy-drift.timer"
DEPENDENCIES = ["pyinfra", "jinja2", "paramiko", "pydantic", "huggingface-hub", "requests"]


def settings() -> tuple[DriftSection, InstallSection]:
    nested = split_host_data(host.data.dict())
    try:
        drift = DriftSection.model_validate(nested.get("drift", {}))
        install = InstallSection.model_validate(nested.get("install", {}))
    except ValueError as exc:
        raise DeployError(f"{host.name}: drift_*/install_* settings: {exc}") from None
    known = drift.known_hosts_file
    if known and not Path(known).expanduser().is_file():
        raise DeployError(f"host {host.name!r}: drift_known_hosts_file: {known} does not exist on the controller")
    return drift, install


def pinned_commit(commit: str | None) -> str:
    """The 40-hex commit the ops host runs (the controller's HEAD unless drift_commit names one)."""
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{commit or 'HEAD'}^{{commit}}"],
                              capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise DeployError(f"{host.name}: drift_commit {commit or 'HEAD'!r} is not a commit of {REPO}") from exc


def archive(commit: str) -> bytes:
    """That commit's tree as a tar (git archive is byte-stable: an unchanged commit uploads nothing)."""
    return subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit],
                          capture_output=True, check=True, timeout=120).stdout


def textfile_dir(d: DriftSection) -> str:
    return d.textfile_dir or f"/var/lib/{d.user}/textfile"


def _user(d: DriftSection, home: str) -> None:
    server.group(name=f"Group {d.user}", group=d.user, system=True)
    server.user(name=f"User {d.user} (runs the drift check)", user=d.user, group=d.user, system=True,
                home=home, shell="/usr/sbin/nologin", create_home=False)
    for path, mode in [(home, "750"), (f"{home}/.ssh", "700"), (f"{home}/reports", "750"), (textfile_dir(d), "755")]:
        files.directory(name=f"Directory {path}", path=path, user=d.user, group=d.user, mode=mode)
    key = f"{home}/.ssh/id_ed25519"
    if host.get_fact(File, path=f"{key}.pub"):
        host.log(f"drift checker key: {key}.pub on {host.name}; authorize it on the fleet")
    else:  # made here once: the checker's own identity, never copied anywhere
        server.shell(name="The drift checker's own SSH key", commands=[
            f"runuser -u {d.user} -- ssh-keygen -q -t ed25519 -N '' -C r1deploy-drift@{host.name} -f {key}"])
    if d.known_hosts_file:
        files.put(name="The fleet's host keys", src=str(Path(d.known_hosts_file).expanduser()),
                  dest=f"{home}/.ssh/known_hosts", user=d.user, group=d.user, mode="644")


def _checkout(d: DriftSection, install: InstallSection, commit: str) -> tuple[str, str]:
    releases = f"{d.root}/releases"
    checkout, venv = f"{releases}/{commit}", f"{d.root}/venv"
    files.directory(name=f"Directory {releases}", path=releases, mode="755")
    tarball = files.put(name=f"Checkout {commit[:12]} (git archive)", src=io.BytesIO(archive(commit)),
                        dest=f"{releases}/{commit}.tar", mode="644")
    server.shell(name=f"Unpack checkout {commit[:12]}", _if=tarball.did_change, commands=[
        f"rm -rf {checkout}.tmp && mkdir -p {checkout}.tmp && tar -xf {releases}/{commit}.tar -C {checkout}.tmp "
        f"&& rm -rf {checkout} && mv {checkout}.tmp {checkout}"])
    files.link(name=f"Point {d.root}/current at {commit[:12]}", path=f"{d.root}/current", target=checkout)
    pip.venv(name=f"Virtualenv {venv}", path=venv, python="python3")
    pinned(name="The checker's Python dependencies (the controller's exact versions)", venv=venv,
           requirements=[f"{name}=={version(name)}" for name in DEPENDENCIES],
           source_args=pip_source_args(SimpleNamespace(install=install)))
    return f"{d.root}/current", venv


def _secrets(d: DriftSection) -> None:
    """The fleet inventory's secret files, at their controller paths, owned by the checker (0600)."""
    for path in d.secret_files:
        source = Path(path)
        if not source.exists():
            raise DeployError(f"host {host.name!r}: drift_secret_files: {path} does not exist on the controller")
        for each in sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]:
            secret_file(name=f"Secret {each} (0600 {d.user})", path=str(each), content=each.read_text(),
                        user=d.user, mode="600")


@deploy("Drift timer")
def drift_timer() -> None:
    d, install = settings()
    home = f"/var/lib/{d.user}"
    commit = pinned_commit(d.commit)
    apt.packages(name="OS packages for the checker", packages=["python3-venv", "openssh-client", "curl"],
                 update=True, cache_time=24 * 3600, no_recommends=True)
    _user(d, home)
    _secrets(d)
    checkout, venv = _checkout(d, install, commit)
    env_file = f"{d.root}/drift.env"  # systemd reads it as root before it drops to drift_user
    secret_file(name=f"drift_env: {env_file} (0600 root)", path=env_file,
                content=render_template("drift.env.j2", host=host.name, env=d.env))
    ctx = dict(host=host.name, inventory=d.inventory, commit=commit, user=d.user, home=home, checkout=checkout,
               python=f"{venv}/bin/python", reports=f"{home}/reports", keep=d.keep_runs, full=d.full,
               textfile=f"{textfile_dir(d)}/r1deploy_drift.prom", key=f"{home}/.ssh/id_ed25519",
               known_hosts=f"{home}/.ssh/known_hosts", on_calendar=d.on_calendar,
               randomized_delay_s=d.randomized_delay_s, env_file=env_file)
    units = [files.put(name=f"Unit {name}", src=StringIO(render_template(f"{name}.j2", **ctx)),
                       dest=f"/etc/systemd/system/{name}", mode="644") for name in (SERVICE, TIMER)]
    systemd.daemon_reload(name="systemd daemon-reload", _if=lambda: any(u.did_change() for u in units))
    systemd.service(name=f"Enable {TIMER}", service=TIMER, running=True, enabled=True)
