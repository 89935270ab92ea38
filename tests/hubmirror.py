"""Test helpers: a real mirror process on 127.0.0.1 and the tiny model, shared by the weights tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "lab"))

import tinymodel  # noqa: E402

HUB_ENV = {"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@dataclass
class Mirror:
    proc: subprocess.Popen
    url: str
    log: Path

    def requests(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def file_gets(self, name: str | None = None) -> list[dict]:
        return [r for r in self.requests() if r["method"] == "GET" and "/resolve/" in r["path"]
                and (name is None or r["path"].endswith("/" + name))]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_mirror(root: Path, log: Path, *extra: str) -> Mirror:
    proc = subprocess.Popen(
        [sys.executable, "-m", "r1deploy.mirror", "serve", "--root", str(root), "--host", "127.0.0.1",
         "--port", "0", "--log", str(log), *extra],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )
    line = proc.stdout.readline()  # "serving ROOT on http://127.0.0.1:PORT"
    if not line:
        proc.wait(timeout=10)
        raise RuntimeError("mirror did not start")
    return Mirror(proc, line.split()[-1], log)


def hub_env(endpoint: str, home: Path) -> dict[str, str]:
    env = dict(os.environ, **HUB_ENV, HF_ENDPOINT=endpoint, HF_HOME=str(home))
    env.pop("HF_TOKEN", None)
    return env


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tinymodel.build(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def mirror_factory(tmp_path: Path):
    started: list[Mirror] = []

    def make(root: Path, *extra: str) -> Mirror:
        m = start_mirror(root, tmp_path / f"access-{len(started)}.jsonl", *extra)
        started.append(m)
        return m

    yield make
    for m in started:
        m.stop()
