"""Base: OS packages, the service users, r1deploy's directories, and the host agent."""

from urllib.parse import urlparse

from pyinfra.api import deploy
from pyinfra.operations import apt, files, pip, server
from r1deploy.roles._pip import pinned
from r1deploy.roles._rollout import track
from r1deploy.roles._spec import host_spec
from r1deploy.roles.base.agent import AGENT_SRC, agent_code

from r1deploy import AGENT_REQUIREMENTS
from r1deploy.serving.render import CACHE_DIR, CONFIG_DIR, MIRROR_USER, ROUTER_USER, STATE_DIR, agent_venv

# Venvs come from `python3 -m venv` (its own pip); python3-pip's recommends were 245 packages (a whole
# C toolchain, perl, gnupg) on every host. The engine's compiler, where it needs one: roles/vllm.
PACKAGES = ["python3-venv", "curl", "ca-certificates"]
__all__ = ["AGENT_SRC", "base", "pip_source_args", "venv_packages"]


def pip_source_args(spec) -> str:
    """pip flags for where software comes from: an index, find-links, or both (air-gapped: no index)."""
    args = []
    if spec.install.pip_index_url:
        args.append(f"--index-url {spec.install.pip_index_url}")
    elif spec.install.find_links:
        args.append("--no-index")
    args += [f"--find-links {url}" for url in spec.install.find_links]
    # Plain-http sources on a private network (a wheelhouse on the LAN) must be trusted explicitly.
    plain = {urlparse(u).hostname for u in [spec.install.pip_index_url or "", *spec.install.find_links]
             if u.startswith("http://")}
    args += [f"--trusted-host {h}" for h in sorted(plain | set(spec.install.trusted_hosts))]
    return " ".join(args)


def venv_packages(name: str, venv: str, packages: list[str], spec, present: bool = True):
    """Packages in a virtualenv made with the host's python3 -m venv (no virtualenv tool needed)."""
    made = track(pip.venv(name=f"Virtualenv {venv}", path=venv, python="python3"))
    installed = track(pinned(name=name, venv=venv, requirements=packages, present=present,
                             source_args=pip_source_args(spec)))
    return made, installed


def _service_user(spec) -> None:
    """The engine's user, and each other service's own (nodes: the LAN mirror; gateways: the router)."""
    own = MIRROR_USER if spec.fleet.role == "node" else ROUTER_USER
    for user, home in ((spec.vllm.user, STATE_DIR), (own, "/nonexistent")):
        server.group(name=f"Group {user}", group=user, system=True)
        server.user(name=f"User {user}", user=user, group=user, system=True, home=home,
                    shell="/usr/sbin/nologin", create_home=False)


def _directories(spec) -> None:
    user = spec.vllm.user
    for path, owner, mode in [
        (CONFIG_DIR, "root", "755"), (f"{CONFIG_DIR}/releases", "root", "755"),
        (STATE_DIR, user, "750"), (CACHE_DIR, user, "750"), (spec.model.root, user, "755"),
        (spec.install.root, "root", "755"),
    ]:
        track(files.directory(name=f"Directory {path}", path=path, user=owner, group=owner, mode=mode))


def _agent(spec) -> None:
    """The host agent: r1deploy's own code, run on the host for weights and smoke checks."""
    venv = agent_venv(spec)
    venv_packages("Agent dependencies", venv, AGENT_REQUIREMENTS, spec)
    track(agent_code(name="Agent code", dest=f"{venv}/src/r1deploy"))


@deploy("Base")
def base() -> None:
    spec = host_spec()
    track(apt.packages(name="OS packages", packages=PACKAGES, update=True, cache_time=24 * 3600,
                       no_recommends=True))
    _service_user(spec)
    _directories(spec)
    _agent(spec)
