"""The drift core: runs, staleness, crashes, exit codes, JSON keys, the textfile, kept runs."""

import json
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from r1deploy.cli import main
from r1deploy.drift import runs as drift
from r1deploy.drift.runs import Finding, HostReport, run_check, start_run


def finished(reports, run_id, host, *findings):
    report = HostReport(reports, run_id, host)
    report.add(findings)
    return report.finish()


def test_a_clean_run_exits_0_and_names_its_run(tmp_path, capsys):
    run = start_run(tmp_path, ["gpu-1", "gw"], "r1")
    finished(tmp_path, "r1", "gpu-1", Finding("gpu-1", "service", True, "r1-vllm.service enabled, active"))
    finished(tmp_path, "r1", "gw", Finding("gw", "backends", True, "2 worker(s)"))
    assert main(["drift", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"run r1 started {run['started']} (2 host(s))" in out and out.rstrip().endswith("no drift")


def test_drift_is_1_and_named(tmp_path, capsys):
    start_run(tmp_path, ["gpu-3"], "r1")
    finished(tmp_path, "r1", "gpu-3", Finding("gpu-3", "release", False, "live=abc spec=def"))
    assert main(["drift", str(tmp_path)]) == 1
    assert "gpu-3            release          DRIFT    live=abc spec=def" in capsys.readouterr().out


def test_a_host_without_a_report_could_not_be_checked(tmp_path, capsys):
    start_run(tmp_path, ["gpu-1", "gpu-2"], "r1")
    finished(tmp_path, "r1", "gpu-1", Finding("gpu-1", "service", True, "ok"))
    assert main(["drift", str(tmp_path)]) == 2
    assert "gpu-2            report           unknown  no report in this run" in capsys.readouterr().out


def test_a_check_that_did_not_finish_or_crashed_is_not_ok(tmp_path, capsys):
    start_run(tmp_path, ["a", "b"], "r1")
    HostReport(tmp_path, "r1", "a")  # started, never finished
    HostReport(tmp_path, "r1", "b").finish(error="DeployError: no spec")
    assert main(["drift", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "started: the check did not finish" in out and "crashed: DeployError: no spec" in out


def test_only_the_current_run_counts_and_an_old_report_is_stale(tmp_path, capsys):
    start_run(tmp_path, ["a"], "r1", now=1000)
    finished(tmp_path, "r1", "a", Finding("a", "service", True, "ok"))
    start_run(tmp_path, ["a"], "r2", now=2000)
    assert main(["drift", str(tmp_path)]) == 2  # r1's "ok" says nothing about r2
    # A report copied in from an earlier run is stale, whatever it says.
    src = drift.host_report_path(tmp_path, "r1", "a")
    dest = drift.host_report_path(tmp_path, "r2", "a")
    dest.parent.mkdir(parents=True)
    dest.write_text(src.read_text())
    assert main(["drift", str(tmp_path)]) == 2
    assert "stale report from run 'r1'" in capsys.readouterr().out
    assert main(["drift", str(tmp_path), "--run", "r1"]) == 0


def test_an_old_latest_run_is_not_evidence(tmp_path):
    start_run(tmp_path, ["a"], "r1", now=1000)
    finished(tmp_path, "r1", "a", Finding("a", "service", True, "ok"))
    assert main(["drift", str(tmp_path)]) == 0
    assert main(["drift", str(tmp_path), "--max-age", "3600"]) == 2


def test_nothing_to_read_is_not_a_pass(tmp_path):
    assert main(["drift", str(tmp_path)]) == 2
    (tmp_path / "drift-gpu-1.json").write_text('[{"host": "gpu-1", "check": "x", "ok": true, "detail": ""}]')
    assert main(["drift", str(tmp_path)]) == 2  # old flat reports belong to no run


def test_a_check_that_raises_becomes_could_not_check():
    def weights():
        raise TypeError("sequence item 0: expected str instance, dict found")

    assert run_check("node2", "weights", weights) == [
        Finding("node2", "weights", None, "check raised TypeError: sequence item 0: expected str instance, dict found")]
    assert run_check("node2", "service", lambda: [Finding("node2", "service", True, "ok")])[0].ok is True


def test_drift_outweighs_could_not_check():
    ok, bad, unknown = (Finding("h", "c", v, "") for v in (True, False, None))
    assert [drift.exit_code(f) for f in ([ok], [ok, bad], [ok, unknown], [bad, unknown], [])] == [0, 1, 2, 1, 2]


def test_json_keys_are_stable(tmp_path, capsys):
    start_run(tmp_path, ["a"], "r1", now=1000)
    finished(tmp_path, "r1", "a", Finding("a", "answers", True, "/health ok"))
    main(["drift", str(tmp_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert sorted(out) == ["exit_code", "findings", "run", "schema", "verdict"]
    assert out["schema"] == 1 and out["exit_code"] == 0 and out["verdict"] == "no drift"
    assert out["run"] == {"run_id": "r1", "started": "1970-01-01T00:16:40+00:00", "started_ts": 1000,
                          "hosts": ["a"], "full": False}
    assert out["findings"] == [{"host": "a", "check": "answers", "ok": True, "detail": "/health ok", "state": "ok"}]


def test_textfile_is_valid_prometheus_text(tmp_path):
    start_run(tmp_path, ["a", "b"], "r1", now=1234.5)
    finished(tmp_path, "r1", "a", Finding("a", "weights", False, 'shard "1" truncated'),
             Finding("a", "weights", True, "ok"), Finding("a", "service", True, "ok"))
    prom = tmp_path / "out" / "r1deploy_drift.prom"
    assert main(["drift", str(tmp_path), "--textfile", str(prom)]) == 1
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    checks = {(s.labels["host"], s.labels["check"]): s.value for s in families["r1deploy_drift_check"].samples}
    assert checks == {("a", "weights"): 1, ("a", "service"): 0, ("b", "report"): 2}
    assert families["r1deploy_drift_run_timestamp_seconds"].samples[0].value == 1234.5
    assert families["r1deploy_drift_exit_code"].samples[0].value == 1
    with pytest.raises(ValueError, match=r"\*\.prom"):
        drift.write_textfile(tmp_path / "drift.txt", "")


def test_the_last_n_runs_are_kept_with_a_latest_link(tmp_path):
    for i in range(5):
        start_run(tmp_path, ["a"], f"r{i}", keep=3, now=1000 + i)
    runs = drift.runs_dir(tmp_path)
    assert sorted(p.name for p in runs.iterdir()) == ["latest", "r2", "r3", "r4"]
    assert os.readlink(runs / "latest") == "r4" and (runs / "latest" / "run.json").exists()


def test_run_ids_sort_by_time_and_reject_paths(tmp_path):
    early, late = drift.new_run_id(1000), drift.new_run_id(2000)
    assert early < late and early.startswith("19700101T001640Z-")
    with pytest.raises(ValueError, match="R1DEPLOY_DRIFT_RUN"):
        start_run(tmp_path, ["a"], "../elsewhere")


def test_a_run_manifest_is_written_once(tmp_path):
    first = start_run(tmp_path, ["a", "b"], "r1", now=1000)
    assert start_run(tmp_path, ["a"], "r1", now=2000) == first  # every host of one pyinfra run


def test_print_cron_is_one_line_without_percent(tmp_path, capsys):
    assert main(["drift", "--print-cron", "--inventory", "inventories/prod.py", "--reports", str(tmp_path)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"*/15 * * * * mkdir -p {tmp_path}/drift && cd ") and "drift-run" in line
    assert "%" not in line and "\n" not in line
    assert f"--textfile {tmp_path}/drift/r1deploy_drift.prom" in line


def test_expected_hosts_honour_limit():
    from r1deploy.drift.cli import expected_hosts

    assert expected_hosts("inventories/prod.py", []) == ["gpu-h200-01", "gpu-h100-01", "gpu-h100-02", "gpu-h100-11",
                                                         "gpu-h100-12", "gpu-h200-11", "gpu-h200-12", "gateway-01",
                                                         "gateway-02"]
    assert sorted(expected_hosts("inventories/prod.py", ["h100_nodes"])) == ["gpu-h100-01", "gpu-h100-02"]
    assert sorted(expected_hosts("inventories/prod.py", ["gateway-*"])) == ["gateway-01", "gateway-02"]


def test_an_inventory_that_does_not_load_could_not_be_checked(tmp_path, capsys):
    """A timer's run whose inventory raises (a secret directory missing on the ops host, a typo in
    group data) checked nothing: one line naming file and line, exit 2, and the textfile says 2 so
    Prometheus never keeps reading the last run's 0."""
    inventory = tmp_path / "fleet.py"
    group_data = tmp_path / "group_data"
    group_data.mkdir()
    (group_data / "all.py").write_text("import os\nkeys = os.listdir('/nonexistent/keys')\n")
    inventory.write_text("nodes = [('node1.example', {})]\n")
    prom = tmp_path / "drift.prom"
    code = main(["drift-run", str(inventory), "--reports", str(tmp_path / "reports"), "--textfile", str(prom)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"could not check {inventory}: " in err and "all.py:2: FileNotFoundError" in err, err
    assert "Traceback" not in err
    assert "r1deploy_drift_exit_code 2" in prom.read_text()
