"""Who may talk to the fleet, and where: API keys, TLS and addresses of the edge and the engines.

Clients reach the fleet only through each gateway's nginx (public host:port, optionally TLS). nginx
knows every client key by name, refuses a missing or wrong one with a JSON 401, proxies the OpenAI
routes only, and sends the nodes' own key upstream (vllm-router forwards the Authorization header
it receives to the worker, so the router itself holds no key and none is in its argv). The router
listens on the gateway's loopback only: its admin routes (add/remove/list workers) are reached
over SSH, never from the network.

Pure: secrets are resolved on the controller (env vars, files), rendered here, uploaded by roles
with roles/_secret.secret_file.
"""

from __future__ import annotations

import os
import re

from r1deploy.serving.render import CONFIG_DIR, engine_bind, render_template
from r1deploy.spec import Spec

NGINX_DIR = "/etc/nginx/r1deploy"
SITE_CONF = "/etc/nginx/conf.d/r1-gateway.conf"
KEYS_CONF = f"{NGINX_DIR}/keys.conf"
TLS_CERT = f"{NGINX_DIR}/tls.crt"
TLS_KEY = f"{NGINX_DIR}/tls.key"
ACCESS_LOG = "/var/log/nginx/r1-gateway.access.log"
# The router colour nginx routes to (blue/green, r1deploy.fleet.bluegreen): the one record of it.
ROUTER_UPSTREAM = f"{NGINX_DIR}/router-upstream.conf"
# What nginx runs from: after every successful `nginx -t` + reload their digests are written to
# LOADED_MARK, so a converge (and drift) knows whether the files on disk are the loaded ones.
EDGE_FILES = (SITE_CONF, KEYS_CONF, TLS_CERT, TLS_KEY, ROUTER_UPSTREAM)
LOADED_MARK = f"{NGINX_DIR}/loaded.sha256"


def edge_digests_sh() -> str:
    """Shell printing `sha256  path` of each edge file present (the form LOADED_MARK holds)."""
    return f"for f in {' '.join(EDGE_FILES)}; do if [ -e \"$f\" ]; then sha256sum -- \"$f\"; fi; done"
# On nodes (and gateways, for their smoke through the router): root-only, 0600.
SECRET_ENV = f"{CONFIG_DIR}/secret.env"
AUTH_HEADER = f"{CONFIG_DIR}/vllm-auth.header"
# On gateways: one client's key (the first by name), for the smoke through nginx (issue 21 item 2).
EDGE_SMOKE_HEADER = f"{CONFIG_DIR}/edge-smoke.header"
# Characters a key may have: it goes into nginx config and HTTP headers, quoted.
_KEY = re.compile(r"^[A-Za-z0-9._~+/=-]{8,512}$")


class SecretError(ValueError):
    """A secret reference that cannot be resolved on the controller; names the key, never a value."""


def resolve(ref: str, what: str) -> str:
    """'env:VAR' or 'file:PATH' on the controller -> the secret, checked to be usable as a key."""
    kind, _, name = ref.partition(":")
    if kind == "env":
        value = os.environ.get(name, "").strip()
        if not value:
            raise SecretError(f"{what}: ${name} is not set on the controller")
    elif kind == "file":
        path = os.path.expanduser(name)
        try:
            with open(path) as f:
                value = f.read().strip()
        except OSError as exc:
            raise SecretError(f"{what}: cannot read {path}: {exc.strerror}") from None
    else:
        raise SecretError(f"{what}: {kind!r} is not env: or file:")
    if not _KEY.match(value):
        raise SecretError(f"{what} ({ref}): a key is 8-512 of A-Z a-z 0-9 . _ ~ + / = -")
    return value


def _key_ref(spec: Spec, prefix: str) -> str | None:
    """The key named by vllm_<prefix>_env or vllm_<prefix>_file (env first); None when neither is set."""
    env, path = getattr(spec.vllm, f"{prefix}_env"), getattr(spec.vllm, f"{prefix}_file")
    if env:
        return resolve(f"env:{env}", f"vllm_{prefix}_env")
    if path:
        return resolve(f"file:{path}", f"vllm_{prefix}_file")
    return None


def vllm_api_key(spec: Spec) -> str | None:
    """The key every node's vLLM requires; None when the spec names none."""
    return _key_ref(spec, "api_key")


def vllm_api_key_previous(spec: Spec) -> str | None:
    """The key a rotation retires (issue 21 item 2): nodes accept it too while it is set."""
    return _key_ref(spec, "api_key_previous")


def client_keys(spec: Spec) -> dict[str, str]:
    """Client key name -> key, for the gateway's nginx."""
    keys = {name: resolve(ref, f"gateway_api_keys[{name!r}]") for name, ref in spec.gateway.api_keys.items()}
    seen: dict[str, str] = {}
    for name, key in keys.items():
        if key in seen:
            raise SecretError(f"gateway_api_keys: {seen[key]!r} and {name!r} are the same key")
        seen[key] = name
    return keys


def edge_local_url(spec: Spec) -> str:
    """nginx's edge as the gateway itself reaches it (loopback where it listens everywhere)."""
    g = spec.gateway
    bind = "127.0.0.1" if g.host in ("0.0.0.0", "::") else g.host
    return f"{'https' if g.tls_cert_file else 'http'}://{f'[{bind}]' if ':' in bind else bind}:{g.port}"


def router_admin(spec: Spec) -> str:
    """Where a gateway's live vllm-router answers, admin routes included: its loopback, asked on
    the host. A shell word (use it bare or inside double quotes): the port is read on the host
    when the command runs, from nginx's upstream include (blue/green), so a command planned
    before a colour switch still reaches the router that is live when it runs."""
    return f"http://127.0.0.1:$({live_router_port_sh(spec)})"


def live_router_port_sh(spec: Spec) -> str:
    """Shell printing the live router's port: the include's, else blue's (a gateway from before
    blue/green, or a first install: the single router on gateway_router_port)."""
    return (f"sed -n 's/^ *server 127\\.0\\.0\\.1:\\([0-9]*\\);.*/\\1/p' {ROUTER_UPSTREAM} 2>/dev/null "
            f"| grep -m1 . || echo {spec.gateway.router_port}")


def engine_local_url(spec: Spec, host_ip: str | None) -> str:
    """How checks on the node itself reach its vLLM (it may not listen on loopback)."""
    bind = engine_bind(spec, host_ip)
    return f"http://{'127.0.0.1' if bind in ('0.0.0.0', '::') else bind}:{spec.vllm.port}"


def curl_auth(header_file: str = AUTH_HEADER) -> str:
    """curl arguments that send the nodes' key from the host's root-only header file, when it is
    there (a fleet without a vLLM key has none): the key never enters a command line."""
    return f"$(test -r {header_file} && echo -H @{header_file})"


def auth_header(key: str) -> str:
    """curl -H @file reads this: the key never enters a command line."""
    return f"Authorization: Bearer {key}\n"


def secret_env(key: str, previous: str | None = None) -> str:
    """During a rotation the engine accepts both keys (r1deploy.serving.vllm_keys reads them)."""
    both = f'R1DEPLOY_VLLM_API_KEYS="{key} {previous}"\n' if previous and previous != key else ""
    return f"# Rendered by r1deploy: secrets of r1-vllm.service (root only).\nVLLM_API_KEY={key}\n{both}"


def node_key_for_nginx(new: str | None, previous: str | None, refusing: list[str]) -> str | None:
    """What nginx sends the nodes: the new key once every worker it routes to accepts it, the
    previous one while any refuses it (held by a stopped rollout, or outside this run's --limit)."""
    return previous if previous and refusing else new


def render_site(spec: Spec, host: str, tls: bool) -> str:
    """nginx's server for the gateway: no secret in it (keys live in KEYS_CONF)."""
    g = spec.gateway
    return render_template("r1-gateway.conf.j2", host=host, listen=f"{g.host}:{g.port}", tls=tls,
                           router_upstream=ROUTER_UPSTREAM, read_timeout_s=g.read_timeout_s,
                           keys_conf=KEYS_CONF, tls_cert=TLS_CERT, tls_key=TLS_KEY, access_log=ACCESS_LOG)


def render_keys(clients: dict[str, str], node_key: str | None) -> str:
    """The secret half: client keys -> names, and the nodes' key nginx sends upstream."""
    return render_template("keys.conf.j2", clients=sorted(clients.items()), node_key=node_key)
