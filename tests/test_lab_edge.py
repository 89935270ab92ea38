"""Nobody gets in who shouldn't (issue 10): the edge, the nodes' key, secrets nowhere, rotation.

On the shared lab (tests/conftest.py `fleet`): through the gateway with the OpenAI client over TLS
(the lab's CA), the right key answers and a missing or wrong one is a 401; the router's admin
routes are not reachable from another lab host; a node's vLLM refuses a request without its key.
After the deploy, every secret value is searched for in pyinfra's output (normal and -vvv), each
host's process list, journals, rendered files and logs, and the controller's reports: 0 hits.
Rotating a client key under the load loop fails no request. Each test prints its counts.
"""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
import requests
from labharness import (
    REPO,
    changed_ops,
    client_key,
    converge,
    edge_http,
    gateway_url,
    host_ip,
    node_names,
    ssh,
)
from loadloop import LoadLoop

pytestmark = pytest.mark.lab

SECRET_FILES = {  # path on the host -> (mode, owner, group) it must have
    "/etc/r1deploy/vllm-auth.header": ("600", "root", "root"),
    "/etc/r1deploy/secret.env": ("600", "root", "root"),
    "/etc/r1deploy/edge-smoke.header": ("600", "root", "root"),  # the gateway's smoke through nginx (issue 21)
    "/etc/nginx/r1deploy/keys.conf": ("640", "root", "www-data"),
    "/etc/nginx/r1deploy/tls.key": ("640", "root", "www-data"),
}
UNITS = ["r1-vllm.service", "vllm-router.service", "nginx.service", "r1-mirror.service"]


def _model(lab) -> str:
    return lab["model"]["repo_id"].split("/", 1)[1]


def _client(lab, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url(lab)}/v1", api_key=key, max_retries=0,
                         http_client=edge_http(lab))


def _secrets(lab) -> dict[str, str]:
    edge = lab["edge"]
    found = {f"client key {p.name}": p.read_text().strip() for p in Path(edge["client_keys"]).iterdir()}
    found["vllm key"] = Path(edge["vllm_key"]).read_text().strip()
    # The TLS key's base64 body lines (long enough to be unique).
    found |= {f"tls key line {i}": line for i, line in enumerate(Path(edge["key"]).read_text().splitlines())
              if len(line) > 40}
    return found


def test_right_key_answers_missing_or_wrong_key_is_401(lab):
    client = _client(lab, client_key(lab))
    models = [m.id for m in client.models.list()]
    reply = client.chat.completions.create(model=_model(lab), max_tokens=8,
                                           messages=[{"role": "user", "content": "Say hi"}])
    assert _model(lab) in models and reply.usage.completion_tokens > 0
    streamed = list(client.chat.completions.create(model=_model(lab), max_tokens=8, stream=True,
                                                   messages=[{"role": "user", "content": "Say hi"}]))
    assert len(streamed) > 1  # chunks, not one buffered body

    with pytest.raises(openai.AuthenticationError) as wrong:
        _client(lab, "r1lab-not-a-key-at-all-xxxxxxxx").models.list()
    # httpx with the lab's CA, as the OpenAI client uses: requests/urllib3 recurse in ssl once
    # pyinfra's gevent has patched it in this process (an earlier lab module imports pyinfra).
    http = edge_http(lab)
    no_key = http.get(f"{gateway_url(lab)}/v1/models")
    assert wrong.value.status_code == 401 and no_key.status_code == 401
    assert no_key.json()["error"]["code"] == "invalid_api_key"
    other = [http.get(f"{gateway_url(lab)}{path}", headers={"Authorization": f"Bearer {client_key(lab)}"}).status_code
             for path in ("/list_workers", "/metrics", "/v1/embeddings", "/")]
    print(f"\nedge: right key 200 ({len(models)} model(s), {len(streamed)} stream chunks); wrong key "
          f"{wrong.value.status_code}; no key {no_key.status_code}; other routes {other}")
    assert other == [404, 404, 404, 404]


def test_admin_routes_and_engines_refuse_the_network(lab):
    node = node_names(lab)[0]
    gw = host_ip(lab, "gateway")
    # From a node (another lab host): the router's port is closed; via the edge there is no such route.
    direct = ssh(lab, node, f"curl -s -o /dev/null -w '%{{http_code}}' -m 5 http://{gw}:8081/list_workers; echo \" $?\"")
    added = ssh(lab, node, f"curl -sk -o /dev/null -w '%{{http_code}}' -m 5 -X POST "
                           f"'https://{gw}:8080/add_worker?url=http://{host_ip(lab, node)}:9'")
    assert direct.stdout.split()[-1] == "7", direct.stdout  # curl 7: connection refused
    assert added.stdout.strip() == "404", added.stdout
    engine = f"http://{host_ip(lab, node)}:8000"
    bare = requests.get(f"{engine}/v1/models", timeout=30)
    keyed = requests.get(f"{engine}/v1/models", timeout=30,
                      headers={"Authorization": f"Bearer {Path(lab['edge']['vllm_key']).read_text().strip()}"})
    listening = ssh(lab, node, "ss -Hltn").stdout
    print(f"\nadmin: router port from {node}: curl exit {direct.stdout.split()[-1]}; add_worker via edge "
          f"{added.stdout.strip()}; {node} vLLM without key {bare.status_code}, with key {keyed.status_code}")
    assert bare.status_code == 401 and keyed.status_code == 200
    assert f"{host_ip(lab, node)}:8000" in listening and "0.0.0.0:8000" not in listening, listening


def _host_texts(lab, name: str) -> dict[str, str]:
    """What a reader of the host could see: processes, journals, rendered files, logs (secret files
    themselves excluded). Fetched and searched here: no secret ever goes into a command line."""
    skip = " ".join(f"! -path {p}" for p in SECRET_FILES) + " ! -path '*/.r1deploy-staging/*'"
    commands = {
        "processes": "ps -eo user,args",
        "journal": "journalctl --no-pager -o cat -n 200000",
        "files": f"find /etc/r1deploy /etc/systemd/system /etc/nginx /var/log/nginx /var/lib/r1deploy /tmp "
                 f"/etc/default -xdev -type f -size -4M {skip} -exec cat {{}} + 2>/dev/null",
    }
    return {f"{name} {what}": ssh(lab, name, cmd).stdout for what, cmd in commands.items()}


def test_no_secret_anywhere_and_secret_files_locked(lab, fleet):
    quiet = converge("-vvv")  # a no-change converge, at pyinfra's most verbose
    assert quiet.returncode == 0 and changed_ops(quiet.out) == 0, quiet.out[-8000:]
    texts = {"pyinfra output (first converge)": fleet[1].out, "pyinfra output (-vvv)": quiet.out}
    texts |= {f"report {p.name}": p.read_text() for p in (REPO / "reports").glob("*.json")}
    for h in lab["hosts"]:
        texts |= _host_texts(lab, h["name"])
    secrets = _secrets(lab)
    hits = [(what, where) for what, value in secrets.items() for where, text in texts.items() if value in text]
    scanned = sum(len(t) for t in texts.values())
    print(f"\nsecrets: {len(secrets)} values x {len(texts)} sources ({scanned} bytes): {len(hits)} hit(s) {hits}")
    assert hits == []

    modes = []
    for h in lab["hosts"]:
        out = ssh(lab, h["name"], "stat -c '%n %a %U %G' " + " ".join(SECRET_FILES) + " 2>/dev/null").stdout
        modes += [line.split() for line in out.splitlines()]
    print("secret files: " + "; ".join(" ".join(m) for m in modes))
    assert {m[0] for m in modes} == set(SECRET_FILES)
    assert all(tuple(m[1:]) == SECRET_FILES[m[0]] for m in modes), modes
    controller = [p for p in Path(lab["edge"]["client_keys"]).iterdir()] + [Path(lab["edge"]["vllm_key"]),
                                                                          Path(lab["edge"]["key"])]
    assert all(p.stat().st_mode & 0o077 == 0 for p in controller)


def test_units_sandbox_exposure_printed(lab):
    rows = []
    for h in lab["hosts"]:
        for unit in UNITS:
            out = ssh(lab, h["name"], f"systemctl cat {unit} >/dev/null 2>&1 && "
                                      f"systemd-analyze security {unit} --no-pager | tail -1").stdout.strip()
            if out:
                rows.append(f"{h['name']} {unit}: {out}")
    print("\nsystemd-analyze security:\n  " + "\n  ".join(rows))
    assert rows


def test_key_rotation_under_load_fails_no_request(lab):
    keys = Path(lab["edge"]["client_keys"])
    old, new = keys / "ci", keys / "ci-next"
    from lab.edge import new_key

    new_key(new.name)
    loop = LoadLoop(gateway_url(lab), _model(lab), rate=3, max_requests=2000, max_seconds=900,
                    api_key=old.read_text().strip(),
                    http_client=edge_http(lab)).start()
    time.sleep(3)
    try:
        added = converge()
        assert added.returncode == 0, added.out[-8000:]
        with_new = _client(lab, new.read_text().strip()).models.list()
    finally:
        result = loop.stop()
    # The users move to the new key; then the old one goes.
    loop2 = LoadLoop(gateway_url(lab), _model(lab), rate=3, max_requests=2000, max_seconds=900,
                     api_key=new.read_text().strip(),
                     http_client=edge_http(lab)).start()
    retired = old.read_text().strip()
    old.unlink()
    time.sleep(3)
    try:
        removed = converge()
        assert removed.returncode == 0, removed.out[-8000:]
    finally:
        result2 = loop2.stop()
    new.rename(old)  # leave the lab as found: a key named "ci" (its value is now the new one)
    restored = converge()
    with pytest.raises(openai.AuthenticationError):
        _client(lab, retired).models.list()
    print(f"\nrotation: old key while adding: {result.summary()}\nnew key while removing: {result2.summary()}")
    assert with_new.data and restored.returncode == 0
    assert result.failed == 0 and result2.failed == 0
    assert result.truncated == 0 and result2.truncated == 0
    assert result.ok > 0 and result2.ok > 0
