"""Start a rendered systemd unit's ExecStart the way systemd would, on a host without systemd.

Reads [Service]: EnvironmentFile= (a leading '-' means optional), Environment=,
WorkingDirectory= and ExecStart=; the process gets the EnvironmentFile variables on top of
this process's environment (PYTHONPATH and PATH of the wheels carried to the device), then
execs ExecStart. User=/Group= are reported, not applied (the device runs everything as root).

    python bench/h200/run_unit.py r1-vllm.service
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path


def parse_unit(text: str) -> dict[str, list[str]]:
    section, out = None, {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section == "Service" and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def parse_env_file(text: str) -> dict[str, str]:
    """systemd EnvironmentFile: KEY=VALUE lines, '#' comments, optional double/single quotes."""
    env = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = shlex.split(value)[0]
        env[key.strip()] = value
    return env


def main(argv: list[str]) -> int:
    unit = parse_unit(Path(argv[1]).read_text())
    env = dict(os.environ)
    for spec in unit.get("EnvironmentFile", []):
        optional = spec.startswith("-")
        path = Path(spec.lstrip("-"))
        if not path.is_file():
            if optional:
                continue
            print(f"run_unit: EnvironmentFile {path} missing", file=sys.stderr)
            return 1
        loaded = parse_env_file(path.read_text())
        print(f"run_unit: EnvironmentFile {path}: {', '.join(f'{k}={v}' for k, v in loaded.items())}", flush=True)
        env.update(loaded)
    for item in unit.get("Environment", []):
        for pair in shlex.split(item):
            key, _, value = pair.partition("=")
            env[key] = value
    if unit.get("User"):
        print(f"run_unit: User={unit['User'][0]} not applied (running as uid {os.getuid()})", flush=True)
    workdir = (unit.get("WorkingDirectory") or ["/"])[0]
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)
    command = shlex.split(unit["ExecStart"][-1])
    print(f"run_unit: ExecStart {shlex.join(command)} (cwd {workdir})", flush=True)
    os.execvpe(command[0], command, env)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
