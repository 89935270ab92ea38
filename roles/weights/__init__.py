"""Weights: pull the pinned commit with the host agent (resumable, hash-verified), then publish it.

Fan-out (`model_seed_nodes`): a seed pulls from upstream and serves its pull in place on the LAN
(r1-mirror.service: `r1deploy mirror serve --pulled`, hashes from the agent's manifest); every
other node pulls from a seed with the same agent. pyinfra runs each operation on every host
before the next one and orders operations by their place in this file. `model_seed_mode`:
"complete": the seeds' pull, then their mirror, then the other nodes' pull, so a seed has
finished before anyone pulls from it. "pipelined": the seeds' mirror first (it lists the commit
from upstream and holds requests for files not verified yet), then one pull operation on every
node at once: the nodes fetch each file as soon as a seed has it.
"""

import hashlib
import os
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import files, server, systemd

from r1deploy.catalog import find_model
from r1deploy.render import CONFIG_DIR, MIRROR_USER, agent_venv, render_template
from roles._fleet import address
from roles._rollout import track
from roles._secret import secret_file
from roles._spec import host_spec
from roles.weights.facts import PublishedModel

TOKEN_FILE = f"{CONFIG_DIR}/hub-token"
MIRROR_SERVICE = "r1-mirror.service"


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


def mirror_root(spec) -> str:
    """The mirror's own (empty) publish root: a seed serves its pull in place (--pulled)."""
    return f"{spec.model.root}/.mirror"


def seed_url(spec, name: str) -> str:
    """Where the other nodes reach seed `name`'s mirror: its serving address, else its SSH address."""
    seed = host.inventory.get_host(name, None)
    if seed is None:
        raise DeployError(f"model_seed_nodes names {name!r}, which is not in the inventory")
    address = seed.data.get("vllm_host_ip") or seed.data.get("ssh_hostname") or name
    address = f"[{address}]" if ":" in address else address
    return f"http://{address}:{spec.model.seed_port}"


def source_of(spec, name: str) -> str | None:
    """The endpoint `name` pulls from: upstream for seeds (None = the hub's default), else a seed."""
    seeds = spec.model.seed_nodes
    if not seeds or name in seeds:
        return spec.model.hub_endpoint
    pick = int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(seeds)  # spread nodes over seeds
    return seed_url(spec, seeds[pick])


# Quantized output per source byte (BF16 source): 8-bit weights about half, 4-bit about a quarter,
# plus the unquantized embeddings and head.
QUANT_OUTPUT_RATIO = {"fp8_dynamic": 0.55, "w8a8_int8": 0.55, "w4a16": 0.3}


def extra_bytes(spec) -> int:
    """Disk the quantize stage will need beside the pull, for the agent's preflight (0 if unknown)."""
    from r1deploy.render import quantized_dir

    entry = find_model(spec.model.repo_id)
    if not quantized_dir(spec) or not entry or entry.repo_id != spec.model.repo_id:
        return 0
    return int(entry.weight_bytes * QUANT_OUTPUT_RATIO[spec.quant.scheme])


def _pull_command(spec, venv: str, token_file: str | None, endpoint: str | None) -> str:
    m = spec.model
    argv = [f"{venv}/bin/python", "-m", "r1deploy.weights", "pull", "--repo", m.repo_id,
            "--revision", m.revision, "--root", m.root, "--margin-gib", str(m.disk_margin_gib),
            "--workers", str(m.pull_workers), "--extra-bytes", str(extra_bytes(spec))]
    if endpoint:
        argv += ["--endpoint", endpoint]
    if token_file:
        argv += ["--token-file", token_file]  # a path: the token never enters argv
    if m.allow_patterns:
        argv += ["--allow", *m.allow_patterns]
    if m.ignore_patterns:
        argv += ["--ignore", *m.ignore_patterns]
    cmd = f"PYTHONPATH={venv}/src PYTHONDONTWRITEBYTECODE=1 HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_XET=1 {shlex.join(argv)}"
    return f"runuser -u {spec.vllm.user} -- sh -c {shlex.quote(cmd)}"


def _pull(spec, venv: str, token_file: str | None, endpoint: str | None, state: dict) -> None:
    if state.get("commit") == spec.model.revision and state.get("verified"):
        return
    source = endpoint if spec.model.seed_nodes and host.name not in spec.model.seed_nodes else "upstream"
    track(server.shell(name=f"Pull {spec.model.repo_id}@{spec.model.revision[:12]} from {source}",
                       commands=[_pull_command(spec, venv, token_file, endpoint)]))


def _seed_mirror(spec, venv: str, token_file: str | None) -> None:
    """Serve this seed's pull in place on the LAN (no copy: the agent's verified directory)."""
    m = spec.model
    pipelined = m.seed_mode == "pipelined"
    unit = render_template(f"{MIRROR_SERVICE}.j2", repo_id=m.repo_id, host=host.name, user=MIRROR_USER,
                           model_root=m.root,
                           agent_src=f"{venv}/src", python=f"{venv}/bin/python", mirror_root=mirror_root(spec),
                           bind=address(host), port=m.seed_port, access_log="/var/log/r1-mirror/access.jsonl",
                           local_dir=m.local_dir, upstream=(m.hub_endpoint or "hub") if pipelined else None,
                           upstream_token_file=token_file if pipelined else None)
    put = track(files.put(name=f"Unit {MIRROR_SERVICE}", src=StringIO(unit),
                          dest=f"/etc/systemd/system/{MIRROR_SERVICE}", mode="644"))
    systemd.daemon_reload(name="systemd daemon-reload (mirror)", _if=put.did_change)
    systemd.service(name=f"Serve the weights on the LAN ({MIRROR_SERVICE}, port {m.seed_port})",
                    service=MIRROR_SERVICE, running=True, enabled=True)
    systemd.service(name=f"Restart {MIRROR_SERVICE} on a new unit", service=MIRROR_SERVICE, restarted=True,
                    _if=put.did_change)


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
    seeds = spec.model.seed_nodes
    seed, pipelined = host.name in seeds, spec.model.seed_mode == "pipelined"
    # Order matters (see the module docstring): each call below is one step for every host.
    if seed and pipelined:
        _seed_mirror(spec, venv, token_file)
    if not seeds or seed or pipelined:  # upstream pulls; pipelined: every node's pull at once
        _pull(spec, venv, token_file if seed or not seeds else None, source_of(spec, host.name), state)
    if seed and not pipelined:
        _seed_mirror(spec, venv, token_file)
    if seeds and not pipelined:
        # pyinfra orders operations as a graph of each host's own sequence: without a step every
        # node shares, the other nodes' pull would be ready as early as the seeds' upstream pull.
        server.shell(name="Fan-out: the seeds serve the LAN", commands=[])
    if seeds and not seed and not pipelined:
        _pull(spec, venv, None, source_of(spec, host.name), state)  # a LAN seed needs no hub token
