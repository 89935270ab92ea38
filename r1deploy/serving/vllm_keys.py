"""Run vLLM accepting several API keys, none on a command line (issue 21 item 2: key rotation).

vLLM 0.26 and 0.32 take several keys in `--api-key` (a list: its auth middleware accepts any of
them), but VLLM_API_KEY holds one. During a rotation window the root-only secret.env sets
R1DEPLOY_VLLM_API_KEYS="new previous"; this adds them to vLLM's own argv inside the process, so
/proc/<pid>/cmdline shows only the module names. Usage, in the vLLM venv (PYTHONPATH: the agent):

    python -m r1deploy.serving.vllm_keys <vLLM's module> [its arguments...]

Imports nothing from r1deploy.
"""

import os
import runpy
import sys

if __name__ == "__main__":  # vLLM's workers re-import the main module: start only once
    module = sys.argv.pop(1)
    keys = os.environ.pop("R1DEPLOY_VLLM_API_KEYS", "").split()
    if keys:
        sys.argv += ["--api-key", *keys]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
