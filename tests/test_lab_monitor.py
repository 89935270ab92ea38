"""The fleet seen by its own Prometheus, on the local lab: every target up, vLLM's metrics after smoke
traffic, the drift textfile, every dashboard query answered, and the vLLM-down alert going
pending -> firing when a node's vLLM stops.

Needs root and the lab (the session's shared one, tests/labharness.py); slow. The CPU lab has no
GPUs, so the DCGM panels are the only queries allowed to come back empty.
"""

import time
from pathlib import Path

import pytest
import requests
from labharness import PY, REPO, client_key_file, converge, gateway_url, run, ssh

from r1deploy.observe.dashboard import build_dashboard, concrete, panel_queries

pytestmark = pytest.mark.lab  # in CI's make test (one shared lab bring-up)


@pytest.fixture(scope="module")
def lab(fleet):
    lab, first = fleet  # the session's shared lab (tests/labharness.py), converged once
    assert first.returncode == 0, first.out[-8000:]
    return lab


def ip_of(lab, role: str) -> list[tuple[str, str]]:
    return [(h["name"], h["ip"]) for h in lab["hosts"] if h["role"] == role]


def prom(lab, path: str, **params) -> dict:
    gateway_ip = ip_of(lab, "gateway")[0][1]
    r = requests.get(f"http://{gateway_ip}:9090/api/v1/{path}", params=params, timeout=10)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]


def query(lab, expr: str) -> list[dict]:
    return prom(lab, "query", query=expr)["result"]


def wait_for(what: str, check, timeout_s: float = 120, every_s: float = 3):
    """Poll `check` until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")


def test_every_target_is_up(lab):
    nodes, gateways = ip_of(lab, "node"), ip_of(lab, "gateway")

    def all_up():
        targets = prom(lab, "targets", state="active")["activeTargets"]
        by_job: dict[str, list] = {}
        for t in targets:  # vLLM: one job per API key (vllm, vllm-<key source>)
            job = t["labels"]["job"]
            by_job.setdefault("vllm" if job.startswith("vllm") else job, []).append(t["health"])
        expected = {"node": len(nodes) + len(gateways), "vllm": len(nodes), "router": len(gateways), "prometheus": 1}
        ok = all(by_job.get(j, []).count("up") == n for j, n in expected.items())
        return by_job if ok else None

    wait_for("every node exporter, vLLM, router and Prometheus up", all_up)
    assert {r["metric"]["node"] for r in query(lab, 'up{job=~"vllm.*"} == 1')} == {n for n, _ in nodes}


def test_vllm_metrics_have_samples_for_every_node_after_smoke(lab):
    nodes = {n for n, _ in ip_of(lab, "node")}

    def per_node(expr: str):
        got = {r["metric"].get("node") for r in query(lab, expr)}
        return got if got >= nodes else None

    wait_for("vllm:num_requests_running per node", lambda: per_node("vllm:num_requests_running"))
    # the converge's smoke tests asked every node (directly and through the gateway)
    wait_for("a TTFT histogram with samples per node",
             lambda: per_node("sum by (node) (vllm:time_to_first_token_seconds_count) > 0"))


def test_the_drift_textfile_reaches_prometheus(lab, tmp_path):
    ran = run(str(Path(PY).parent / "pyinfra"), "-y", "lab/inventories/lab.py", "deploy/drift.py", timeout=600,
              R1DEPLOY_REPORTS=str(tmp_path))
    assert ran.returncode == 0, ran.out[-6000:]
    prom_file = tmp_path / "r1-drift.prom"
    summary = run(PY, "-m", "r1deploy", "drift", str(tmp_path), "--textfile", str(prom_file))
    assert summary.returncode == 0, summary.stdout
    gateway = ip_of(lab, "gateway")[0][0]
    put = ssh(lab, gateway, f"cat > /var/lib/prometheus/node-exporter/r1-drift.prom <<'EOF'\n"
                            f"{prom_file.read_text()}EOF")
    assert put.returncode == 0, put.stderr
    wait_for("the drift textfile scraped", lambda: query(lab, "r1deploy_drift_exit_code == 0"))
    assert not query(lab, f'node_textfile_scrape_error{{node="{gateway}"}} == 1')


def test_every_dashboard_query_returns_data(lab):
    # Through the edge as a user: TLS by the lab's CA, a client key read from its file.
    smoke = run(PY, "-m", "r1deploy", "smoke", f"gw={gateway_url(lab)}", "--model", _served_name(),
                "--api-key-file", str(client_key_file(lab)), "--no-reasoning", "--json", timeout=300,
                REQUESTS_CA_BUNDLE=lab["edge"]["ca"])
    assert smoke.returncode == 0, smoke.out[-3000:]
    time.sleep(35)  # two scrapes after the traffic, so rate() has a window
    empty = []
    for title, expr in panel_queries(build_dashboard()):
        if "DCGM_" in expr:  # no GPUs in the CPU lab
            continue
        if not query(lab, concrete(expr)):
            empty.append((title, expr))
    assert empty == [], empty


def _served_name() -> str:
    from r1deploy.fleet.inventory import load_specs

    specs = load_specs("lab/inventories/lab.py", cwd=str(REPO))
    return next(s.model.name for s in specs.values() if s.fleet.role == "node")


def test_a_stopped_vllm_fires_the_alert_after_its_for(lab):
    node = ip_of(lab, "node")[-1][0]

    def state():
        alerts = prom(lab, "alerts")["alerts"]
        return {a["state"] for a in alerts if a["labels"]["alertname"] == "R1VllmDown"
                and a["labels"].get("node") == node}

    assert ssh(lab, node, "systemctl stop r1-vllm").returncode == 0
    seen: list[str] = []

    def firing():
        seen.extend(sorted(state()))
        return "firing" in seen

    try:
        wait_for("R1VllmDown pending, then firing", firing, timeout_s=240, every_s=2)
        assert "pending" in seen and seen.index("pending") < seen.index("firing"), seen
    finally:
        ssh(lab, node, "systemctl start r1-vllm")
    # Back once Prometheus scrapes it again (the API answers only after the engine is ready): the
    # converge below restarts nothing that did not change, and the bench after it goes through
    # the router to every node.
    wait_for(f"{node}'s vLLM scraped again", lambda: any(
        r["value"][1] == "1" for r in query(lab, f'up{{job=~"vllm.*",node="{node}"}}')), timeout_s=600, every_s=5)
    healed = converge()
    assert healed.returncode == 0, healed.out[-8000:]


def test_bench_writes_two_releases_and_flags_a_slower_one(lab, tmp_path):
    """`r1deploy bench` through the gateway, the tool on node1 (its vLLM venv) over ssh; then the same
    sweep against a fleet limited to one sequence at a time must come out as a regression."""
    from r1deploy.fleet.inventory import load_specs
    from r1deploy.serving.render import vllm_venv

    spec = load_specs("lab/inventories/lab.py", cwd=str(REPO))["node1"]
    node_ip = dict(ip_of(lab, "node"))["node1"]
    # The tool on node1 calls the edge like a user: the lab's CA and a client key, as files there.
    bench_dir = "/root/r1lab-bench"

    def place_auth() -> None:  # over stdin: the key is never in a command line
        for name, text in (("ca.crt", Path(lab["edge"]["ca"]).read_text()), ("key", client_key_file(lab).read_text())):
            put = ssh(lab, "node1", f"install -d -m 700 {bench_dir} && umask 077 && cat > {bench_dir}/{name}",
                      stdin=text)
            assert put.returncode == 0, put.stderr

    ssh_args = (f"-i {lab['ssh_key']} -o BatchMode=yes -o UserKnownHostsFile={lab['known_hosts']} "
                f"-o StrictHostKeyChecking=accept-new root@{node_ip}")

    def bench(release: str):
        return run(PY, "-m", "r1deploy", "bench", "--release", release, "--base-url", gateway_url(lab),
                   "--api-key-file", f"{bench_dir}/key", "--ca-file", f"{bench_dir}/ca.crt",
                   "--model", spec.model.name, "--tokenizer", spec.model.current_link,
                   "--tool-python", f"{vllm_venv(spec)}/bin/python", "--ssh", ssh_args,
                   "--concurrency", "1", "8", "--repeats", "3", "--input-len", "64", "--output-len", "32",
                   "--out", str(tmp_path), "--threshold", "10", timeout=1800)

    place_auth()
    try:
        first = bench("lab-a")
    finally:  # the key is needed again only after the slow converge: nothing of it waits on node1
        ssh(lab, "node1", f"rm -rf {bench_dir}")
    assert first.returncode == 0, first.out[-4000:]
    slow = run(str(Path(PY).parent / "pyinfra"), "-y", "lab/inventories/lab.py", "deploy/main.py",
               "--data", "vllm_max_num_seqs=1")
    assert slow.returncode == 0, slow.out[-8000:]
    try:
        place_auth()
        second = bench("lab-slow")
        assert second.returncode == 1, second.out[-4000:]
        assert "lab-slow vs lab-a" in second.out and "REGRESSION" in second.out, second.out[-4000:]
        for release in ["lab-a", "lab-slow"]:
            for name in ["summary.json", "throughput.png", "latency.png"]:
                assert (tmp_path / release / name).stat().st_size > 0
            assert len(list((tmp_path / release / "runs").glob("c*-r*.json"))) == 6
    finally:
        ssh(lab, "node1", f"rm -rf {bench_dir}")
        healed = converge()
        assert healed.returncode == 0, healed.out[-8000:]
