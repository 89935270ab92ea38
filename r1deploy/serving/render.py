"""Render a host's serving files (engine config, environment, units) from its spec. Pure: no I/O to hosts.

Engine arguments are layered: the spec's always-present settings, then the capacity plan's
(parallelism, R1 recipe flags), then every spec value the operator set explicitly, then
`vllm_extra_args`. The release id is a digest of what is rendered, so an unchanged spec is
an unchanged release and a converge restarts nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import jinja2

from r1deploy.paths import TEMPLATES
from r1deploy.serving import pd
from r1deploy.serving.group import ServingGroup
from r1deploy.serving.launch import Launch, group_engine_args, group_env, multi_gpu_args
from r1deploy.spec import Spec

CONFIG_DIR = "/etc/r1deploy"
STATE_DIR = "/var/lib/r1deploy"
CACHE_DIR = "/var/cache/r1deploy"
SERVICE = "r1-vllm.service"
ROUTER_SERVICE = "vllm-router.service"
ROUTER_WORKERS_ENV = f"{CONFIG_DIR}/router-workers.env"  # its start list (render_router_workers)
ROUTER_USER = "r1-router"  # not the engine's user: the router reads no weights, writes nothing
MIRROR_USER = "r1-mirror"  # reads the weights, writes only its log directory

# Spec fields that map 1:1 onto vLLM engine args when the operator sets them.
_EXPLICIT = [
    "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "enable_expert_parallel",
    "max_model_len", "enable_prefix_caching", "enable_chunked_prefill", "max_num_seqs", "all2all_backend",
]


def vllm_venv(spec: Spec) -> str:
    return f"{spec.install.root}/vllm-{spec.install.vllm_version}"


def agent_venv(spec: Spec) -> str:
    return f"{spec.install.root}/agent"


def router_venv(spec: Spec) -> str:
    return f"{spec.install.root}/router-{spec.install.router_version}"


def quant_venv(spec: Spec) -> str:
    return f"{spec.install.root}/llmcompressor-{spec.quant.llmcompressor_version}"


def native_quantization(spec: Spec) -> str | None:
    """How the catalog's copy of the model is quantized already (R1 671B: FP8 blocks), else None."""
    from r1deploy.planner.catalog import find_model
    from r1deploy.serving.quantize import native_quantization as from_config

    entry = find_model(spec.model.repo_id)
    return from_config(entry.config) if entry and entry.repo_id == spec.model.repo_id else None


def quantized_dir(spec: Spec) -> str | None:
    """Where the quantize stage puts this spec's output; None when nothing is quantized."""
    if spec.quant.scheme == "none" or native_quantization(spec):
        return None
    from r1deploy.serving.quantize import output_dir, recipe, recipe_hash

    rec = recipe(spec.quant.scheme, spec.quant.llmcompressor_version, spec.quant.torch_version)
    return output_dir(spec.model.local_dir, spec.quant.scheme, recipe_hash(rec))


def served_model_dir(spec: Spec) -> str:
    return quantized_dir(spec) or spec.model.local_dir


def exec_start(spec: Spec, grouped: bool = False) -> str:
    venv = vllm_venv(spec)
    if spec.vllm.device == "cpu" and grouped:
        # `vllm serve` (multi-node, --headless) through r1deploy.serving.vllm_cli; PYTHONPATH in vllm.env.
        module = "r1deploy.serving.vllm_cli serve"
    elif spec.vllm.device == "cpu":
        # The CPU build's `vllm` console script looks up a dist named "vllm" and fails.
        module = "vllm.entrypoints.openai.api_server"
    else:
        module = "vllm.entrypoints.cli.main serve"  # what the `vllm` console script runs
    if rotating_key(spec):  # old + new key accepted, given inside the process (r1deploy.serving.vllm_keys)
        return f"{venv}/bin/python -m r1deploy.serving.vllm_keys {module}"
    if module.startswith("vllm.entrypoints.cli"):
        return f"{venv}/bin/vllm serve"
    return f"{venv}/bin/python -m {module}"


def rotating_key(spec: Spec) -> bool:
    """A vLLM key rotation window is open: nodes accept the previous key too (issue 21 item 2)."""
    return bool(spec.vllm.api_key_previous_env or spec.vllm.api_key_previous_file)


def engine_bind(spec: Spec, host_ip: str | None) -> str:
    """vLLM's listen address: the spec's, else the node's fleet address, never every interface
    unless nothing else is known."""
    return spec.vllm.host or spec.vllm.host_ip or host_ip or "0.0.0.0"


def engine_args(spec: Spec, planned: dict[str, Any] | None = None, host_ip: str | None = None) -> dict[str, Any]:
    v = spec.vllm
    args: dict[str, Any] = {
        "model": served_model_dir(spec),
        "served-model-name": spec.model.name,
        "host": engine_bind(spec, host_ip),
        "port": v.port,
        "dtype": v.dtype,
        "generation-config": "auto",
    }
    if v.device == "cuda":
        args["gpu-memory-utilization"] = v.gpu_memory_utilization
    if v.kv_cache_dtype != "auto":
        args["kv-cache-dtype"] = v.kv_cache_dtype
    if v.reasoning_parser:
        args["reasoning-parser"] = v.reasoning_parser
    if v.trust_remote_code:
        args["trust-remote-code"] = True
    args.update(planned or {})
    for name in _EXPLICIT:
        value = getattr(v, name)
        if value is not None:
            args[name.replace("_", "-")] = value
    # On SIGTERM vLLM refuses new work and lets running requests finish for this long.
    args["shutdown-timeout"] = spec.rollout.shutdown_timeout_s
    args.update(multi_gpu_args(spec, args))  # before extra_args: the operator's word is last
    args.update(pd.engine_args(spec))  # a P/D side's --kv-transfer-config (r1deploy/serving/pd.py)
    args.update(v.extra_args)
    # The plan may not move the model or the port the service is known by.
    args["model"], args["port"] = served_model_dir(spec), v.port
    return args


def compile_cache_dir(spec: Spec) -> str:
    """Compile/JIT caches of one vLLM version on local disk: kept across restarts, so a restart is
    warm; a new vLLM version starts its own (its kernels are not the old one's)."""
    return f"{CACHE_DIR}/compile/{spec.install.vllm_package}-{spec.install.vllm_version}"


def service_env(spec: Spec, host_ip: str | None = None, planned_env: dict[str, str] | None = None) -> dict[str, str]:
    v = spec.vllm
    cache = compile_cache_dir(spec)
    env = {
        "HF_HUB_OFFLINE": "1",  # serve what the weights stage verified; never fetch at start
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HOME": f"{CACHE_DIR}/hf",
        "XDG_CACHE_HOME": CACHE_DIR,
        # Every compile cache in one place per vLLM version: vLLM's own (torch.compile artefacts),
        # inductor's, Triton's (else ~/.triton, lost to the sandbox) and FlashInfer's JIT.
        "VLLM_CACHE_ROOT": f"{cache}/vllm",
        "TORCHINDUCTOR_CACHE_DIR": f"{cache}/inductor",
        "TRITON_CACHE_DIR": f"{cache}/triton",
        "FLASHINFER_WORKSPACE_BASE": f"{cache}/flashinfer",
    }
    ip = v.host_ip or host_ip
    if ip:
        env["VLLM_HOST_IP"] = ip  # else vLLM's internal queues may bind another address
    if v.device == "rocm":  # the planner's ROCm recipe (VLLM_ROCM_USE_AITER on MI300)
        from r1deploy.serving.rocm_vllm import recipe_env_for

        env.update(recipe_env_for(spec))
    if v.device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(v.cpu_kvcache_space_gib)
        if v.cpu_omp_threads_bind:
            env["VLLM_CPU_OMP_THREADS_BIND"] = v.cpu_omp_threads_bind
    if v.nccl_socket_ifname:
        env["NCCL_SOCKET_IFNAME"] = env["GLOO_SOCKET_IFNAME"] = v.nccl_socket_ifname
    if not v.nvlink_multicast:
        env.update(NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1", NVSHMEM_DISABLE_NVLS="1")
    env.update(group_env(spec))
    env.update(pd.env(spec, host_ip))  # NIXL's side channel and UCX's transports on a P/D side
    env.update(planned_env or {})  # the plan's recipe environment (VLLM_USE_DEEP_GEMM, ...)
    env.update(v.env)
    return env


def _systemd_quote(value: str) -> str:
    if value and all(c.isalnum() or c in "._-/:,=+@" for c in value):
        return value
    return json.dumps(value)


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["systemd_quote"] = _systemd_quote


def render_template(name: str, **context: Any) -> str:
    return _env.get_template(name).render(**context)


@dataclass
class NodeFiles:
    """Everything a serving node needs, rendered; `release` names this exact content."""

    engine_args: dict[str, Any]
    env: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)  # file name → content
    release: str = ""


def render_node(spec: Spec, host: str, host_ip: str | None = None,
                planned: dict[str, Any] | None = None, plan_source: str | None = None,
                planned_env: dict[str, str] | None = None, group: ServingGroup | None = None,
                gpus_per_node: int = 1) -> NodeFiles:
    """The release: engine config, env and unit. Its id digests all three, so anything that changes
    what runs (engine args, env, the vLLM version in ExecStart, the unit's limits) is a new
    release, and rolling back restores all of it."""
    args = engine_args(spec, planned, host_ip)
    env = service_env(spec, host_ip, planned_env)
    launch = None
    if group is not None:  # a serving group's member: vLLM's own multi-node flags (r1deploy/serving/launch.py)
        extra, launch = group_engine_args(spec, args, group, group.member(host), gpus_per_node)
        args.update(extra)
        if spec.vllm.device == "cpu":
            env["PYTHONPATH"] = f"{agent_venv(spec)}/src"  # r1deploy.serving.vllm_cli, from the host agent
    if rotating_key(spec):
        env["PYTHONPATH"] = f"{agent_venv(spec)}/src"  # r1deploy.serving.vllm_keys, from the host agent
    ctx = dict(spec=spec, host=host, engine_args=args, env=env,
               exec_start=exec_start(spec, group is not None), config_dir=CONFIG_DIR, state_dir=STATE_DIR,
               cache_dir=CACHE_DIR,
               plan_source=plan_source, stop_timeout_s=spec.rollout.shutdown_timeout_s + 30,
               **_group_context(group, host, launch))
    unit = render_template("r1-vllm.service.j2", **ctx)
    digest = hashlib.sha256(json.dumps([args, env, unit], sort_keys=True).encode()).hexdigest()[:12]
    ctx["release"] = digest
    files = {
        "vllm.yaml": render_template("vllm.yaml.j2", **ctx),
        "vllm.env": render_template("vllm.env.j2", **ctx),
        SERVICE: unit,
    }
    return NodeFiles(engine_args=args, env=env, files=files, release=digest)


def _group_context(group: ServingGroup | None, host: str, launch: Launch | None) -> dict[str, Any]:
    """What the templates say about a group member (comments, unit description)."""
    if group is None or launch is None:
        return {"group": None, "member": None, "launch": None}
    return {"group": group, "member": group.member(host), "launch": launch}


@dataclass
class PlannedEngine:
    """What the capacity plan contributes to a host's files."""

    args: dict[str, Any] | None
    env: dict[str, str] | None
    source: str | None
    gpus_per_node: int = 1


def planned_engine(spec: Spec, gpu: str | None = None, gpus: int | None = None,
                   memory_mib: int | None = None, model_config: dict | None = None) -> PlannedEngine:
    """Engine args, recipe environment and GPUs per node from the plan; CPU hosts: one device a node."""
    if spec.vllm.device == "cpu" or not (gpu or spec.plan.gpu):
        return PlannedEngine(None, None, None)
    from r1deploy.planner import plan_for_spec

    plan = plan_for_spec(spec, gpu_name=gpu, gpu_count=gpus, gpu_memory_mib=memory_mib, model_config=model_config)
    if not plan.fits:
        raise ValueError("the capacity plan refuses this spec: " + "; ".join(plan.reasons))
    from r1deploy.serving.ep_kernels import plan_engine_args

    return PlannedEngine(plan_engine_args(spec, plan), plan.engine_env(), "the capacity plan", plan.gpus_per_node)


def planned_engine_args(spec: Spec, gpu: str | None = None, gpus: int | None = None,
                        memory_mib: int | None = None, model_config: dict | None = None
                        ) -> tuple[dict[str, Any] | None, str | None]:
    """Engine args from the capacity plan, or (None, None) when the spec names no hardware."""
    pe = planned_engine(spec, gpu, gpus, memory_mib, model_config)
    return pe.args, pe.source


def render_router_unit(spec: Spec, host: str, colour: str = "blue", routes: Any = None) -> str:
    """The router's unit: from gateway_* settings and the router's version only (no node setting);
    in front of a P/D set (`routes`, r1deploy.fleet.pd_sets.gateway_routes) in vllm-router's P/D mode.
    Blue on gateway_router_port/prometheus_port, green on the *_green_port pair (blue/green)."""
    g = spec.gateway
    port, metrics = (g.router_port, g.prometheus_port) if colour == "blue" else \
        (g.router_green_port, g.prometheus_green_port)
    return render_template("vllm-router.service.j2", spec=spec, host=host, user=ROUTER_USER, colour=colour,
                           port=port, metrics_port=metrics, router_bin=f"{router_venv(spec)}/bin/vllm-router",
                           workers_env=ROUTER_WORKERS_ENV, startup_timeout_s=g.worker_startup_timeout_s,
                           pd_args=pd.router_mode_args(spec) if routes else None)


def render_router_workers(host: str, workers: list[str], routes: Any = None) -> str:
    """The start list: worker URLs, or a P/D set's --prefill/--decode arguments."""
    return render_template("router-workers.env.j2", host=host, workers=workers, routes=routes,
                           pd_line=pd.router_worker_line(routes.prefill, routes.decode) if routes else None)
