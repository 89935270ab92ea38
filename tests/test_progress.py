"""Long work shows itself at pyinfra's normal verbosity: a real `pyinfra @local` run of a ProgressCommand."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from r1deploy.observe.progress import agent_result, pull_summary

REPO = Path(__file__).resolve().parent.parent

# What the weights agent prints: progress on stderr every ~2 s, one JSON result on stdout.
AGENT = textwrap.dedent("""\
    echo 'weights org/m@0123456789ab: fetching 2 of 3 files, 64.0 MiB (0 bytes already in .part files)' >&2
    echo 'weights org/m@0123456789ab: 32.0/64.0 MiB (50%) 16.0 MiB/s ETA 2s model.safetensors' >&2
    echo '{"bytes": 67108864, "bytes_fetched": 67108864, "changed": true, "commit": "0123", "dir": "/srv/models/org--m/0123", "files": 3}'
""")


def test_the_summary_says_what_moved_how_fast_and_from_where():
    lines = [AGENT.splitlines()[-1].split("'")[1]]
    assert agent_result(["noise", *lines])["files"] == 3
    assert pull_summary(lines, 4.0, "http://node1:8090") == (
        "weights: 64.0 MiB moved in 4.0 s (16.0 MiB/s) from http://node1:8090; 3 files, 64.0 MiB verified "
        "in /srv/models/org--m/0123")
    assert pull_summary(['{"changed": false, "error": "DiskFull: 3 GiB short"}'], 1.0, "the hub") == (
        "weights: failed after 1.0 s (from the hub): DiskFull: 3 GiB short")
    assert "no result from the agent" in pull_summary([], 2.0, "the hub")


def test_progress_lines_and_the_summary_show_at_normal_verbosity(tmp_path):
    script = tmp_path / "agent.sh"
    script.write_text(AGENT)
    deploy = tmp_path / "pull.py"
    deploy.write_text(textwrap.dedent(f"""\
        from pyinfra.operations import server
        from r1deploy.observe.progress import pull_summary
        from r1deploy.roles._progress import ProgressCommand

        server.shell(name="Pull", commands=[ProgressCommand(
            "sh {script}", summary=lambda lines, s: pull_summary(lines, s, "http://node1:8090"))])
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ran = subprocess.run([str(Path(sys.executable).parent / "pyinfra"), "-y", "@local", str(deploy)], cwd=REPO,
                         capture_output=True, text=True, timeout=120, env=env)
    out = ran.stdout + ran.stderr
    assert ran.returncode == 0, out
    assert "32.0/64.0 MiB (50%) 16.0 MiB/s ETA 2s" in out
    assert "weights: 64.0 MiB moved in" in out and "from http://node1:8090; 3 files" in out
