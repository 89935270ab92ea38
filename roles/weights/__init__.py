"""Weights: pull the pinned commit with the host agent (resumable, hash-verified), then publish it.

Fan-out (`model_seed_nodes`): a seed pulls from upstream and serves its pull in place on the LAN
(r1-mirror.service: `r1deploy mirror serve --pulled`, hashes from the agent's manifest); every
other node pulls from a seed with the same agent. pyinfra runs each operation on every host
before the next one and orders operations by their place in this file. `model_seed_mode`:
"complete": the seeds' pull, then their mirror, then the other nodes' pull, so a seed has
finished before anyone pulls from it. "pipelined": the seeds' mirror first (it lists the commit
from upstream and holds requests for files not verified yet), then one pull operation on every
node at once: the nodes fetch each file as soon as a seed has it.

Secrets: the hub token (model_hub_token_*) goes only to hosts that pull from upstream; the
fleet's seed token (model_seed_token_file) to every host of a fan-out: the seeds' mirror
refuses requests without it, the nodes send it (`--seed-token-file`), never the hub token.
"""

import hashlib
import os
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import files, server, systemd
from r1deploy.roles._fleet import address
from r1deploy.roles._progress import ProgressCommand
from r1deploy.roles._rollout import track
from r1deploy.roles._secret import secret_file
from r1deploy.roles._spec import host_spec
from r1deploy.roles.weights.facts import PublishedModel

from r1deploy.observe.progress import pull_summary
from r1deploy.planner.catalog import find_model
from r1deploy.serving.render import CONFIG_DIR, MIRROR_USER, agent_venv, render_template

HUB_TOKEN_FILE = f"{CONFIG_DIR}/hub-token"
SEED_TOKEN_FILE = f"{CONFIG_DIR}/seed-token"
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


def _seed_token(spec) -> str | None:
    """The fleet's seed token from the controller file the spec names (required with seeds)."""
    m = spec.model
    if not m.seed_nodes:
        return None
    try:
        with open(os.path.expanduser(m.seed_token_file)) as f:
            token = f.read().strip()
    except OSError as exc:
        raise DeployError(f"{host.name}: model_seed_token_file {m.seed_token_file!r}: {exc.strerror}") from None
    if not token:
        raise DeployError(f"{host.name}: model_seed_token_file {m.seed_token_file!r} is empty")
    return token


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
    from r1deploy.serving.render import quantized_dir

    entry = find_model(spec.model.repo_id)
    if not quantized_dir(spec) or not entry or entry.repo_id != spec.model.repo_id:
        return 0
    return int(entry.weight_bytes * QUANT_OUTPUT_RATIO[spec.quant.scheme])


def pulls_upstream(spec, name: str) -> bool:
    return not spec.model.seed_nodes or name in spec.model.seed_nodes


def _source_args(spec, hub_token_file: str | None) -> list[str]:
    """Where this host pulls from, as agent arguments: upstream with the hub token, or a seed with the seed token."""
    if pulls_upstream(spec, host.name):
        endpoint = spec.model.hub_endpoint
        return (["--endpoint", endpoint] if endpoint else []) + (["--token-file", hub_token_file] if hub_token_file
                                                                 else [])
    return ["--seed", source_of(spec, host.name), "--seed-token-file", SEED_TOKEN_FILE]


def _pull_command(spec, venv: str, source_args: list[str]) -> str:
    m = spec.model
    argv = [f"{venv}/bin/python", "-m", "r1deploy.weights", "pull", "--repo", m.repo_id,
            "--revision", m.revision, "--root", m.root, "--margin-gib", str(m.disk_margin_gib),
            "--workers", str(m.pull_workers), "--extra-bytes", str(extra_bytes(spec))]
    argv += source_args  # token files are paths: a token never enters argv
    if m.allow_patterns:
        argv += ["--allow", *m.allow_patterns]
    if m.ignore_patterns:
        argv += ["--ignore", *m.ignore_patterns]
    cmd = f"PYTHONPATH={venv}/src PYTHONDONTWRITEBYTECODE=1 HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_XET=1 {shlex.join(argv)}"
    return f"runuser -u {spec.vllm.user} -- sh -c {shlex.quote(cmd)}"


def _pull(spec, venv: str, hub_token_file: str | None, state: dict) -> None:
    if state.get("commit") == spec.model.revision and state.get("verified"):
        return
    source = "upstream" if pulls_upstream(spec, host.name) else source_of(spec, host.name)
    # Progress lines stream at normal verbosity; one summary line per host when the pull ends.
    command = ProgressCommand(_pull_command(spec, venv, _source_args(spec, hub_token_file)),
                              summary=lambda lines, s: pull_summary(lines, s, source))
    track(server.shell(name=f"Pull {spec.model.repo_id}@{spec.model.revision[:12]} from {source}",
                       commands=[command]))


def _seed_mirror(spec, venv: str, hub_token_file: str | None, seed_token) -> None:
    """Serve this seed's pull in place on the LAN (no copy: the agent's verified directory), token required."""
    m = spec.model
    pipelined = m.seed_mode == "pipelined"
    unit = render_template(f"{MIRROR_SERVICE}.j2", repo_id=m.repo_id, host=host.name, user=MIRROR_USER,
                           model_root=m.root,
                           agent_src=f"{venv}/src", python=f"{venv}/bin/python", mirror_root=mirror_root(spec),
                           bind=address(host), port=m.seed_port, access_log="/var/log/r1-mirror/access.jsonl",
                           local_dir=m.local_dir, upstream=(m.hub_endpoint or "hub") if pipelined else None,
                           upstream_token_file=hub_token_file if pipelined else None,
                           seed_token_file=SEED_TOKEN_FILE)
    put = track(files.put(name=f"Unit {MIRROR_SERVICE}", src=StringIO(unit),
                          dest=f"/etc/systemd/system/{MIRROR_SERVICE}", mode="644"))
    systemd.daemon_reload(name="systemd daemon-reload (mirror)", _if=put.did_change)
    systemd.service(name=f"Serve the weights on the LAN ({MIRROR_SERVICE}, port {m.seed_port})",
                    service=MIRROR_SERVICE, running=True, enabled=True)
    # The token is read at start: a new one (rotation) needs a restart like a new unit.
    systemd.service(name=f"Restart {MIRROR_SERVICE} on a new unit or token", service=MIRROR_SERVICE,
                    restarted=True, _if=lambda: put.did_change() or seed_token.did_change())


def _secret(spec, what: str, path: str, value: str | None):
    """Place a secret as a 0600 file of the service user; where it is not needed, make sure it is gone."""
    if value is None:
        files.file(name=f"No {what} on this host", path=path, present=False)
        return None
    return track(secret_file(name=f"{what} (0600, service user only)", path=path, content=value,
                             user=spec.vllm.user, mode="600"))


@deploy("Weights")
def weights() -> None:
    spec = host_spec()
    venv = agent_venv(spec)
    upstream = pulls_upstream(spec, host.name)
    hub_token = _token(spec) if upstream else None  # a node pulling from a seed never holds the hub token
    hub_token_file = HUB_TOKEN_FILE if hub_token else None
    _secret(spec, "Hub token", HUB_TOKEN_FILE, hub_token)
    seed_token = _secret(spec, "Seed token", SEED_TOKEN_FILE, _seed_token(spec))
    state = host.get_fact(PublishedModel, agent_python=f"{venv}/bin/python", agent_src=f"{venv}/src",
                          root=spec.model.root, repo_id=spec.model.repo_id) or {}
    seeds = spec.model.seed_nodes
    seed, pipelined = host.name in seeds, spec.model.seed_mode == "pipelined"
    # Order matters (see the module docstring): each call below is one step for every host.
    if seed and pipelined:
        _seed_mirror(spec, venv, hub_token_file, seed_token)
    if upstream or pipelined:  # upstream pulls; pipelined: every node's pull at once
        _pull(spec, venv, hub_token_file, state)
    if seed and not pipelined:
        _seed_mirror(spec, venv, hub_token_file, seed_token)
    if seeds and not pipelined:
        # pyinfra orders operations as a graph of each host's own sequence: without a step every
        # node shares, the other nodes' pull would be ready as early as the seeds' upstream pull.
        server.shell(name="Fan-out: the seeds serve the LAN", commands=[])
    if not upstream and not pipelined:
        _pull(spec, venv, None, state)  # from a seed, with the seed token
