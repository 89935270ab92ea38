"""Spec keys of prefill/decode disaggregation (issue 25), mixed into spec.py's sections.

A node serves as today (``vllm_pd_role = "both"``) or as one side of a P/D set: prefill nodes
compute the prompt's KV cache and hand it to a decode node over NIXL (UCX underneath), and the
gateway's router sends each request to a prefill node first, then to a decode node. The keys live
here so spec.py stays one screen per section; they are fields of VllmSection, GatewaySection,
InstallSection and PlanSection (their prefixes: ``vllm_``, ``gateway_``, ``install_``, ``plan_``).
Cross-host rules (one model per set, both sides present) are r1deploy/fleet/pd_sets.py's.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from r1deploy.spec_strings import KeyedError

PdRole = Literal["prefill", "decode", "both"]
RouterPolicy = Literal["random", "round_robin", "cache_aware", "kv_aware", "power_of_two",
                       "consistent_hash", "sticky_least_loaded"]
# vLLM's own default (docs/features/nixl_connector_usage.md: VLLM_NIXL_SIDE_CHANNEL_PORT, default 5600).
SIDE_CHANNEL_PORT = 5600
# UCX transports where the spec names none. RDMA on a real fleet: rc (InfiniBand/RoCE reliable
# connection, GPUDirect RDMA from the GPU's KV blocks), cuda_copy (UCX moves GPU memory at all),
# cuda_ipc (prefill and decode GPUs on one host). No tcp: a prod set that silently fell back to
# TCP would move R1's KV at a fraction of the speed and miss the TTFT SLO without an error.
# The lab (CPU build, KV in host memory, nspawn machines on one kernel): tcp only, so UCX never
# tries shared memory between machines it takes for one host.
UCX_TLS_PROD = "rc,cuda_copy,cuda_ipc"
UCX_TLS_LAB = "tcp"
UCX_TLS = re.compile(r"^\^?[a-z0-9_]+(,[a-z0-9_]+)*$")
UCX_DEVICES = re.compile(r"^[A-Za-z0-9_.:-]+(,[A-Za-z0-9_.:-]+)*$")
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[a-z0-9,]+\])?==[A-Za-z0-9.+!_-]+$")


class VllmPdKeys(BaseModel):
    """vllm_pd_* and the KV connector's keys (fields of VllmSection)."""

    # Prefill/decode disaggregation (issue 25): "prefill" or "decode" makes this node one side of the
    # P/D set named in vllm_pd_set; "both" serves whole requests, as a node without P/D does.
    pd_role: PdRole = "both"
    # The P/D set this node belongs to: prefill and decode replicas of one model behind one gateway
    # (r1deploy/fleet/pd_sets.py checks them across hosts: same model, revision, vLLM, block size, KV dtype).
    pd_set: str | None = None
    # vLLM's --kv-transfer-config connector between the sides. NixlConnector: what the router's default
    # --kv-connector nixl pairs with, and the one whose package (install_pd_packages) the plan installs.
    kv_connector: Literal["NixlConnector"] = "NixlConnector"
    # NIXL's handshake port (VLLM_NIXL_SIDE_CHANNEL_PORT), bound to the node's fleet address; a DP
    # engine uses this port + each local DP rank. Open between the set's members only.
    kv_side_channel_port: int = Field(default=SIDE_CHANNEL_PORT, ge=1, le=65535)
    # Where the connector stages KV blocks: None is "cuda" on GPUs, "cpu" for vllm_device = "cpu".
    kv_buffer_device: Literal["cuda", "cpu"] | None = None
    # UCX_TLS for the KV transfer. None: "rc,cuda_copy,cuda_ipc" (RDMA) in prod, "tcp" in the lab or on CPU.
    ucx_tls: str | None = None
    # UCX_NET_DEVICES (e.g. "mlx5_0:1,mlx5_1:1"): the NICs the KV moves over. None: UCX picks.
    ucx_net_devices: str | None = None


class GatewayPdKeys(BaseModel):
    """The router's P/D policies (fields of GatewaySection)."""

    # In front of a P/D set the router picks a prefill node, then a decode node. cache_aware sends a
    # prompt to the prefill node that holds its prefix; power_of_two picks the less loaded of two
    # decode nodes (the router's own in-flight count where vLLM reports no load).
    pd_prefill_policy: RouterPolicy = "cache_aware"
    pd_decode_policy: RouterPolicy = "power_of_two"


class InstallPdKeys(BaseModel):
    """Packages of P/D nodes (a field of InstallSection)."""

    # Pinned into the vLLM venv of prefill and decode nodes only. nixl is NVIDIA's meta package: it
    # installs nixl-cu12 and nixl-cu13 (UCX bundled) and imports the one matching the host's CUDA.
    pd_packages: list[str] = Field(default_factory=lambda: ["nixl==1.5.1"])


class PlanPdKeys(BaseModel):
    """The workload the P/D split is sized for (fields of PlanSection)."""

    # Mean prompt and answer lengths (tokens) of the workload: `r1deploy plan` splits a P/D set's nodes
    # into prefill:decode from them. R1's answers carry their reasoning, so answers are long.
    input_tokens: int = Field(default=2048, ge=1)
    output_tokens: int = Field(default=2048, ge=1)


def pd_pins(v: list[str]) -> list[str]:
    """install_pd_packages: exact pins (a wheelhouse serves what was built)."""
    for i, req in enumerate(v):
        if not PIN.match(req):
            raise KeyedError(f"install_pd_packages[{i}]", f"{req!r} is not an exact pin 'name==version' (e.g. 'nixl==1.5.1')")
    return v


def ucx_tls(v: str | None) -> str | None:
    if v is not None and not UCX_TLS.match(v):
        raise ValueError(f"{v!r} is not a UCX transport list (e.g. 'rc,cuda_copy,cuda_ipc' or 'tcp')")
    return v


def ucx_devices(v: str | None) -> str | None:
    if v is not None and not UCX_DEVICES.match(v):
        raise ValueError(f"{v!r} is not a UCX device list (e.g. 'mlx5_0:1,mlx5_1:1')")
    return v


def spec_problems(spec: Any) -> list[tuple[str, str]]:
    """(key, reason) for a host whose P/D keys contradict each other or the host."""
    v = spec.vllm
    if v.pd_role != "both" and not v.pd_set:
        return [("vllm_pd_set", f"vllm_pd_role = {v.pd_role!r}: name the P/D set this node serves in "
                 "(its prefill and decode nodes share one vllm_pd_set)")]
    if v.pd_role != "both" and not v.host_ip:
        return [("vllm_host_ip", f"vllm_pd_role = {v.pd_role!r}: the node's fleet address is needed; NIXL's side "
                 "channel binds to it and the prefill side hands it to the decode side with each request")]
    if v.pd_role == "both" and v.pd_set:
        return [("vllm_pd_role", f"the node is in P/D set {v.pd_set!r} but its role is 'both': "
                 "set 'prefill' or 'decode' (or drop vllm_pd_set)")]
    if v.pd_set and spec.fleet.role == "gateway":
        return [("vllm_pd_set", "a gateway routes to a P/D set, it is not in one: set vllm_pd_* on its nodes")]
    if v.kv_buffer_device == "cuda" and v.device != "cuda":
        return [("vllm_kv_buffer_device", f"'cuda' on a vllm_device = {v.device!r} host: leave it unset")]
    return []


def buffer_device(spec: Any) -> str:
    return spec.vllm.kv_buffer_device or ("cpu" if spec.vllm.device == "cpu" else "cuda")


def transports(spec: Any) -> str:
    """UCX_TLS: the spec's, else RDMA in prod and TCP in the lab or on CPU (see UCX_TLS_PROD)."""
    if spec.vllm.ucx_tls:
        return spec.vllm.ucx_tls
    return UCX_TLS_LAB if spec.fleet.env == "lab" or spec.vllm.device == "cpu" else UCX_TLS_PROD
