import json

from pyinfra.api import FactBase

from r1deploy.serving.edge import AUTH_HEADER, curl_auth


class ServingHealth(FactBase):
    """/health and the served model names of a local vLLM or router, asked on the host itself
    (with the nodes' key from its root-only header file, when there is one)."""

    def command(self, url, auth_header=AUTH_HEADER):
        return (f"curl -fsS -m 5 {url}/health >/dev/null 2>&1 && "
                f"curl -fsS -m 5 {curl_auth(auth_header)} {url}/v1/models || echo DOWN")

    def process(self, output):
        text = "\n".join(output)
        if text.strip().endswith("DOWN"):
            return {"healthy": False, "models": []}
        try:
            return {"healthy": True, "models": [m["id"] for m in json.loads(text)["data"]]}
        except (ValueError, KeyError):
            return {"healthy": True, "models": []}


class EngineRelease(FactBase):
    """The engine unit as the rollout needs it: the release the running process started from,
    where `current` points, whether it is active, the installed unit's digest, where `previous`
    points (even at a release that is gone: `previous_complete` says whether it can start) and
    the address the running engine listens on (`bind`, `port`)."""

    def command(self, current, previous, unit_path, service, release_files=("vllm.yaml", "vllm.env", "r1-vllm.service")):
        complete = " && ".join(f'test -f "$p/{name}"' for name in release_files)
        # Where the running engine listens (its release's vllm.yaml; the current one's when stopped):
        # a changed vllm_port/vllm_host_ip is drained at the address the routers still list.
        return (f"echo live=$(cat /run/r1-vllm/release 2>/dev/null); "
                f"echo current=$(readlink -f {current} 2>/dev/null); "
                f"p=$(readlink {previous} 2>/dev/null); echo previous=$p; "
                f"echo previous_complete=$([ -n \"$p\" ] && {complete} && echo yes); "
                f"echo active=$(systemctl is-active {service} 2>/dev/null); "
                f"echo unit=$(sha256sum {unit_path} 2>/dev/null | cut -d' ' -f1); "
                f"d=$(cat /run/r1-vllm/release 2>/dev/null || readlink -f {current} 2>/dev/null); "
                f"echo bind=$(sed -n 's/^host: *//p' \"$d/vllm.yaml\" 2>/dev/null | tr -d '\"'); "
                f"echo port=$(sed -n 's/^port: *//p' \"$d/vllm.yaml\" 2>/dev/null)")

    def process(self, output):
        values = dict(line.split("=", 1) for line in output if "=" in line)
        name = lambda path: path.rstrip("/").rsplit("/", 1)[-1] if path else None  # noqa: E731
        port = values.get("port", "").strip()
        return {"live": name(values.get("live")), "current": name(values.get("current")),
                "previous": name(values.get("previous")),
                "previous_complete": values.get("previous_complete") == "yes",
                "current_dir": values.get("current") or None,
                "active": values.get("active") == "active", "unit_sha256": values.get("unit") or None,
                "bind": values.get("bind", "").strip() or None, "port": int(port) if port.isdigit() else None}


class RouterWorkers(FactBase):
    """The worker URLs a gateway's router routes to now (its admin API on loopback); None: no router."""

    def command(self, url):
        return f"curl -fsS -m 5 {url}/list_workers || echo DOWN"

    def process(self, output):
        text = "\n".join(output)
        if text.strip().endswith("DOWN"):
            return None
        try:
            return list(json.loads(text)["urls"])
        except (ValueError, KeyError, TypeError):
            return None
