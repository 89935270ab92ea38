import json

from r1deploy.cli import main
from r1deploy.drift import Finding, write_host


def test_exit_codes_and_table(tmp_path, capsys):
    write_host(tmp_path, "gpu-1", [Finding("gpu-1", "service", True, "running")])
    assert main(["drift", str(tmp_path)]) == 0
    assert "no drift" in capsys.readouterr().out

    write_host(tmp_path, "gpu-2", [Finding("gpu-2", "weights", None, "host agent not installed")])
    assert main(["drift", str(tmp_path)]) == 2

    write_host(tmp_path, "gpu-3", [Finding("gpu-3", "release", False, "live=abc spec=def")])
    assert main(["drift", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "gpu-3            release        DRIFT    live=abc spec=def" in out


def test_json_is_stable(tmp_path, capsys):
    write_host(tmp_path, "a", [Finding("a", "answers", True, "/health ok")])
    main(["drift", str(tmp_path), "--json"])
    assert json.loads(capsys.readouterr().out) == [
        {"host": "a", "check": "answers", "ok": True, "detail": "/health ok"}]


def test_nothing_to_read_is_not_a_pass(tmp_path):
    assert main(["drift", str(tmp_path)]) == 2
