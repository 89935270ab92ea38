"""Weights: pull the pinned commit with the host agent (resumable, hash-verified), then publish it."""

import os
import shlex

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import server

from r1deploy.render import CONFIG_DIR, agent_venv
from roles._rollout import track
from roles._secret import secret_file
from roles._spec import host_spec
from roles.weights.facts import PublishedModel

TOKEN_FILE = f"{CONFIG_DIR}/hub-token"


def _token(spec) -> str | None:
    """The hub token from the controller's secret source; never from the inventory itself."""
    m = spec.model
    if m.hub_token_file:
        with open(os.path.expanduser(m.hub_token_file)) as f:
            return f.read().strip()
    if m.hub_token_env:
        if not os.environ.get(m.hub_token_env):
            raise DeployError(f"{host.name}: model_hub_token_env names ${m.hub_token_env}, "
                              "which is not set on the controller")
        return os.environ[m.hub_token_env]
    return None


def _pull_command(spec, venv: str, token_file: str | None) -> str:
    m = spec.model
    argv = [f"{venv}/bin/python", "-m", "r1deploy.weights", "pull", "--repo", m.repo_id,
            "--revision", m.revision, "--root", m.root, "--margin-gib", str(m.disk_margin_gib)]
    if m.hub_endpoint:
        argv += ["--endpoint", m.hub_endpoint]
    if token_file:
        argv += ["--token-file", token_file]  # a path: the token never enters argv
    if m.allow_patterns:
        argv += ["--allow", *m.allow_patterns]
    if m.ignore_patterns:
        argv += ["--ignore", *m.ignore_patterns]
    cmd = f"PYTHONPATH={venv}/src PYTHONDONTWRITEBYTECODE=1 HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_XET=1 {shlex.join(argv)}"
    return f"runuser -u {spec.vllm.user} -- sh -c {shlex.quote(cmd)}"


@deploy("Weights")
def weights() -> None:
    spec = host_spec()
    venv = agent_venv(spec)
    token = _token(spec)
    token_file = None
    if token:
        token_file = TOKEN_FILE
        track(secret_file(name="Hub token (0600, service user only)", path=TOKEN_FILE, content=token,
                          user=spec.vllm.user, mode="600"))
    state = host.get_fact(PublishedModel, agent_python=f"{venv}/bin/python", agent_src=f"{venv}/src",
                          root=spec.model.root, repo_id=spec.model.repo_id) or {}
    if state.get("commit") == spec.model.revision and state.get("verified"):
        return
    track(server.shell(name=f"Pull {spec.model.repo_id}@{spec.model.revision[:12]}",
                       commands=[_pull_command(spec, venv, token_file)]))
