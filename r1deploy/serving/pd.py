"""What a P/D node and its gateway's router run with (issue 25). Pure.

Each side's vLLM gets ``--kv-transfer-config`` (vLLM's KVTransferConfig: the connector, this side's
``kv_role``, where KV blocks are staged, NIXL's UCX backend) and the environment NIXL reads:
``VLLM_NIXL_SIDE_CHANNEL_HOST``/``_PORT`` (the handshake; the prefill side hands its host and port
to the decode side inside each request's kv_transfer_params, so the host is the node's fleet
address, never a loopback) and UCX's transport selection (``UCX_TLS``, ``UCX_NET_DEVICES``; NCCL's
variables do not apply to NIXL). vLLM's docs/features/nixl_connector_usage.md (vLLM 0.2x-0.3x)
describe all of them; tests/test_vllm_parser.py runs the rendered goldens through vLLM's parser.

The router in front of a set runs vllm-router's P/D mode. The pinned vllm-router (0.1.17, its
Python launcher vllm_router/router_args.py, ``RouterArgs.add_cli_args``) defines
``--vllm-pd-disaggregation`` (store_true), ``--prefill URL [BOOTSTRAP_PORT]`` (nargs="+", append),
``--decode URL`` (nargs=1, append), ``--prefill-policy``/``--decode-policy`` (the --policy choices)
and ``--kv-connector {nixl,mooncake,moriio}``; tests/test_pd.py parses the rendered unit with it.
NIXL needs no bootstrap port (Mooncake's), so each --prefill is a URL alone.
"""

from __future__ import annotations

import shlex
from typing import Any

from r1deploy.spec import Spec
from r1deploy.spec_pd import buffer_device, transports

# vLLM's KVTransferConfig.kv_role per side. NixlConnector itself does not act on it (the router picks
# who prefills), but it says what each engine is and is what vLLM's multi-host examples set.
KV_ROLES = {"prefill": "kv_producer", "decode": "kv_consumer"}
ROUTER_CONNECTORS = {"NixlConnector": "nixl"}  # the router's --kv-connector for the nodes' connector


def is_pd(spec: Spec) -> bool:
    return spec.vllm.pd_role != "both"


def kv_transfer_config(spec: Spec) -> dict[str, Any] | None:
    """vLLM's --kv-transfer-config for this node's side; None for a node that serves whole requests."""
    if not is_pd(spec):
        return None
    return {"kv_connector": spec.vllm.kv_connector, "kv_role": KV_ROLES[spec.vllm.pd_role],
            "kv_buffer_device": buffer_device(spec),
            # UCX explicitly: the transport the UCX_* variables below configure.
            "kv_connector_extra_config": {"backends": ["UCX"]}}


def engine_args(spec: Spec) -> dict[str, Any]:
    config = kv_transfer_config(spec)
    return {"kv-transfer-config": config} if config else {}


def env(spec: Spec, host_ip: str | None) -> dict[str, str]:
    """NIXL's side channel and UCX's transports for a P/D node ({} otherwise)."""
    if not is_pd(spec):
        return {}
    out = {"VLLM_NIXL_SIDE_CHANNEL_HOST": spec.vllm.host_ip or host_ip or "",
           "VLLM_NIXL_SIDE_CHANNEL_PORT": str(spec.vllm.kv_side_channel_port),
           "UCX_TLS": transports(spec)}
    if spec.vllm.ucx_net_devices:
        out["UCX_NET_DEVICES"] = spec.vllm.ucx_net_devices
    return out


def pins(spec: Spec) -> list[str]:
    """What the vLLM venv of a P/D node adds: the connector's package (nixl), exact pins."""
    return list(spec.install.pd_packages) if is_pd(spec) else []


# --------------------------------------------------------------------------- the router in P/D mode


def router_mode_args(spec: Spec, connector: str = "NixlConnector") -> list[str]:
    """The unit's fixed P/D flags: from gateway_* settings only, so a node change restarts nothing here."""
    return ["--vllm-pd-disaggregation", "--prefill-policy", spec.gateway.pd_prefill_policy,
            "--decode-policy", spec.gateway.pd_decode_policy, "--kv-connector", ROUTER_CONNECTORS[connector]]


def router_worker_args(prefill: list[str], decode: list[str]) -> list[str]:
    """The start list in P/D mode: each side's URLs as the router's --prefill/--decode take them."""
    return [*(a for url in prefill for a in ("--prefill", url)), *(a for url in decode for a in ("--decode", url))]


def router_worker_line(prefill: list[str], decode: list[str]) -> str:
    """The start list as one environment value, split into arguments by systemd ($VAR unquoted)."""
    return " ".join(shlex.quote(a) for a in router_worker_args(prefill, decode))
