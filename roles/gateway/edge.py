"""The gateway's public edge: nginx from the distribution, keys and TLS, in front of the router.

Client keys, the nodes' key and the TLS key are resolved on the controller and uploaded with
secret_file (root:www-data 0640: nginx's master reads them as root; nobody else can). A change is
an `nginx -t` and a reload, which is graceful: old workers finish their requests (streams too)
while new ones take new connections, so a key rotation refuses nothing in between.
"""

import shlex
from io import StringIO

from pyinfra import host, state
from pyinfra.api import DeployError, FactBase, OperationError, operation
from pyinfra.operations import apt, files, python, server, systemd
from r1deploy.roles._rollout import track
from r1deploy.roles._secret import resolved, secret_file
from r1deploy.roles.gateway.facts import EdgeLoaded
from r1deploy.roles.gateway.window import edge_closed, edge_opened

from r1deploy.serving import edge
from r1deploy.serving.render import render_template

NGINX_GROUP = "www-data"
SANDBOX = "/etc/systemd/system/nginx.service.d/r1deploy-sandbox.conf"
# After a reload, old workers finish what they serve: failures among them are logged a moment later.
RELOAD_SETTLE_S = 2


def _read(path: str, what: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise DeployError(f"{host.name}: {what}: cannot read {path} on the controller: {exc.strerror}") from None


# Per gateway: the workers that refused the new vLLM key when nginx's key was chosen.
ROTATION: dict[str, list[str]] = {}


class KeyRefusedBy(FactBase):
    """Worker URLs whose vLLM refuses the key in `header` (a root-only file: the key is never in argv)."""

    def command(self, urls: list[str], header: str) -> str:
        probes = [f"c=$(curl -s -o /dev/null -m 10 -w '%{{http_code}}' -H @{header} {shlex.quote(u + '/v1/models')}); "
                  f"[ \"$c\" = 200 ] || echo {shlex.quote(u)} \"$c\"" for u in urls]
        return "; ".join(probes + ["true"])

    def process(self, output):
        return [line.split()[0] for line in output if line.strip()]


@operation()
def nginx_keys(clients: dict[str, str], new: str | None, previous: str | None, workers: list[str]):
    """keys.conf with the nodes' key nginx sends: during a rotation (issue 21 item 2) the new key
    only once every worker accepts it (asked when executing, after the rollout), else the previous."""
    refusing: list[str] = []
    if previous:
        refusing = host.get_fact(KeyRefusedBy, urls=workers, header=edge.AUTH_HEADER) \
            if state.is_executing else ["(asked when executing)"]
    ROTATION[host.name] = refusing
    yield from secret_file._inner(path=edge.KEYS_CONF, content=edge.render_keys(
        clients, edge.node_key_for_nginx(new, previous, refusing)), group=NGINX_GROUP, mode="640")


def _rotation_done(previous_set: bool) -> None:
    refusing = ROTATION.get(host.name, [])
    if previous_set and refusing:
        raise OperationError(f"{host.name}: the vLLM key rotation is not complete: {', '.join(refusing)} refuse the "
                             "new key, so nginx keeps sending the previous one. Converge them with "
                             "vllm_api_key_previous_* still set; remove it only once this passes")


def nginx_edge(spec, workers: list[str] | None = None) -> None:
    g = spec.gateway
    track(apt.packages(name="nginx (the public edge)", packages=["nginx"]))
    # Debian's default site listens on :80 for everyone: the edge is the only listener.
    default = files.link(name="nginx: no default site", path="/etc/nginx/sites-enabled/default", present=False)
    track(files.directory(name=f"Directory {edge.NGINX_DIR}", path=edge.NGINX_DIR, user="root",
                          group=NGINX_GROUP, mode="750"))
    clients = resolved(lambda: edge.client_keys(spec))
    node_key = resolved(lambda: edge.vllm_api_key(spec))
    previous = resolved(lambda: edge.vllm_api_key_previous(spec))
    changed = [track(nginx_keys(name=f"nginx: API keys ({len(clients)}: {', '.join(sorted(clients)) or 'none'})",
                                clients=clients, new=node_key, previous=previous, workers=workers or [])), default]
    tls = bool(g.tls_cert_file)
    if tls:
        changed.append(track(files.put(name="nginx: TLS certificate", dest=edge.TLS_CERT, mode="644",
                                       src=StringIO(_read(g.tls_cert_file, "gateway_tls_cert_file")))))
    changed.append(track(secret_file(name="nginx: TLS key (0640 root:www-data)", path=edge.TLS_KEY,
                                     content=_read(g.tls_key_file, "gateway_tls_key_file") if tls else "",
                                     group=NGINX_GROUP, mode="640", present=tls)))
    changed.append(track(files.put(name=f"nginx: {edge.SITE_CONF}", dest=edge.SITE_CONF, mode="644",
                                   src=StringIO(edge.render_site(spec, host.name, tls)))))
    sandbox = track(files.put(name="nginx: sandbox drop-in", dest=SANDBOX, mode="644",
                              src=StringIO(render_template("r1deploy-sandbox.conf.j2", host=host.name))))
    systemd.daemon_reload(name="systemd daemon-reload (nginx)", _if=sandbox.did_change)
    track(systemd.service(name="nginx running", service="nginx", running=True, enabled=True))
    # The sandbox applies at start: a restart, only when the drop-in changed (first install).
    track(systemd.service(name="nginx: restart into the sandbox", service="nginx", restarted=True,
                          _if=sandbox.did_change))
    # On state, not only on "changed in this run": files that landed while `nginx -t` failed or the
    # controller died before the reload are reloaded by the next converge (a revoked key stops working).
    loaded = host.get_fact(EdgeLoaded) == "loaded"
    wanted = lambda: not loaded or any(op.did_change() for op in changed)  # noqa: E731 (asked when executing)
    # Issue 23 item 1: every gateway change reports the requests that failed during it (window.py).
    python.call(name="nginx: open the change window", function=edge_opened, _if=wanted)
    track(server.shell(name="nginx: check and reload (graceful)", commands=[
        f"nginx -t -q && systemctl reload nginx && {{ {edge.edge_digests_sh()}; }} > {edge.LOADED_MARK}.next "
        f"&& mv {edge.LOADED_MARK}.next {edge.LOADED_MARK}"], _if=wanted))
    python.call(name="nginx: requests failed during the reload", function=edge_closed, settle_s=RELOAD_SETTLE_S,
                _if=wanted)
    if previous:
        python.call(name="nginx: the nodes' key rotation is complete", function=_rotation_done, previous_set=True)
