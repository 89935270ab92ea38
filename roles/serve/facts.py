import json

from pyinfra.api import FactBase


class ServingHealth(FactBase):
    """/health and the served model names of a local vLLM or router, asked on the host itself."""

    def command(self, port):
        return (f"curl -fsS -m 5 http://127.0.0.1:{port}/health >/dev/null 2>&1 && "
                f"curl -fsS -m 5 http://127.0.0.1:{port}/v1/models || echo DOWN")

    def process(self, output):
        text = "\n".join(output)
        if text.strip().endswith("DOWN"):
            return {"healthy": False, "models": []}
        try:
            return {"healthy": True, "models": [m["id"] for m in json.loads(text)["data"]]}
        except (ValueError, KeyError):
            return {"healthy": True, "models": []}
