"""The lab's edge secrets, made by `lab up` the way an operator would: a CA and the gateway's
certificate (openssl), client API keys and the nodes' vLLM key, all files under the lab's state
dir (keys 0600). group_data/lab.py points the spec at them; `lab report` prints how a user calls
the fleet with them (https, a key from a file, the lab's CA).

Client keys are the files in keys/ (file name = key name): rotating is adding a file, converging,
removing the old one, converging.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

from lab.state import STATE

EDGE = STATE / "edge"
KEYS = EDGE / "keys"
FIRST_CLIENTS = ("lab-user", "ci")


def read_as_root(euid: int | None = None, sudo_user: str | None = None) -> str:
    """What the printed commands read the lab's root-only files with. A root shell needs (and may
    lack) no sudo; `sudo make lab` runs as root for a user whose own shell is not (SUDO_USER), and
    that user has sudo."""
    euid = os.geteuid() if euid is None else euid
    sudo_user = os.environ.get("SUDO_USER", "") if sudo_user is None else sudo_user
    return "sudo " if euid != 0 or sudo_user not in ("", "root") else ""


def try_it(gateway_url: str, key_file: str, ca: str, body: str, sudo: str) -> str:
    """The commands `lab report` prints, as they work in the user's shell: the key read with `sudo`
    when that shell is not root, and then also the CA, which lies in the root-only edge directory."""
    lines = [f"export R1_API_KEY=$({sudo}cat {key_file})"]
    if sudo:
        lines.append(f"sudo cat {ca} > r1lab-ca.crt")
        ca = "r1lab-ca.crt"
    lines.append(f"curl -s --cacert {ca} {gateway_url}/v1/chat/completions "
                 f"-H \"Authorization: Bearer $R1_API_KEY\" -H 'Content-Type: application/json' -d '{body}'")
    return "".join(f"\n  {line}" for line in lines)


def _private(path: Path, text: str) -> None:
    """Written 0600 from the start (never readable by others, also not for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def new_key(name: str) -> Path:
    """A fresh client key file in keys/ (the next converge lets it in)."""
    path = KEYS / name
    _private(path, f"r1lab-{secrets.token_urlsafe(24)}\n")
    return path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _certificates(gateway_ip: str) -> None:
    ca_key, ca, key, csr, cert = (EDGE / n for n in ("ca.key", "ca.crt", "gateway.key", "gateway.csr", "gateway.crt"))
    if not ca.exists():
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650",
                 "-subj", "/CN=r1deploy lab CA", "-keyout", str(ca_key), "-out", str(ca))
    san, san_file = f"subjectAltName=IP:{gateway_ip},DNS:gateway", EDGE / "gateway.san"
    if cert.exists() and san_file.exists() and san_file.read_text() == san:
        return
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=gateway",
             "-keyout", str(key), "-out", str(csr))
    (EDGE / "gateway.ext").write_text(san + "\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-days", "825", "-extfile", str(EDGE / "gateway.ext"), "-out", str(cert))
    san_file.write_text(san)
    for path in (ca_key, key):
        os.chmod(path, 0o600)


def ensure(info: dict) -> dict:
    """Make what is missing; returns the lab.json entry that group_data/lab.py reads."""
    KEYS.mkdir(parents=True, exist_ok=True)
    os.chmod(EDGE, 0o700)
    gateway_ip = next(h["ip"] for h in info["hosts"] if h["role"] == "gateway")
    _certificates(gateway_ip)
    if not any(KEYS.iterdir()):
        for name in FIRST_CLIENTS:
            new_key(name)
    if not (EDGE / "vllm.key").exists():
        _private(EDGE / "vllm.key", f"r1node-{secrets.token_urlsafe(24)}\n")
    return {"ca": str(EDGE / "ca.crt"), "cert": str(EDGE / "gateway.crt"), "key": str(EDGE / "gateway.key"),
            "client_keys": str(KEYS), "vllm_key": str(EDGE / "vllm.key"), "gateway_url": f"https://{gateway_ip}:8080"}


def client_keys(edge: dict) -> dict[str, str]:
    """Key name -> spec reference, one per file in keys/ (sorted: stable renders)."""
    return {p.name: f"file:{p}" for p in sorted(Path(edge["client_keys"]).iterdir()) if p.is_file()}


def report(info: dict) -> int:
    """Smoke-test every node and the gateway from the controller; print how a user calls the fleet."""
    from r1deploy.serving.smoke import read_key, smoke, table

    edge = info["edge"]
    model = info["model"]["repo_id"].split("/", 1)[1]
    nodes = [(h["name"], f"http://{h['ip']}:8000") for h in info["hosts"] if h["role"] == "node"]
    os.environ["REQUESTS_CA_BUNDLE"] = edge["ca"]  # the gateway's certificate is the lab CA's
    key_file = Path(edge["client_keys"]) / FIRST_CLIENTS[0]
    reports = [smoke(name, url, model, api_key=read_key(edge["vllm_key"])) for name, url in nodes]
    reports.append(smoke("gateway", edge["gateway_url"], model, api_key=read_key(str(key_file))))
    print(table(reports))
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Why is the sky blue?"}],
                       "max_tokens": 64})
    print(f"\nThe fleet answers at {edge['gateway_url']} (TLS by the lab's CA; an API key required)."
          f"\nTry it:{try_it(edge['gateway_url'], str(key_file), edge['ca'], body, read_as_root())}\n")
    return 0 if all(r.ok for r in reports) else 1
