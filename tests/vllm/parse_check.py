"""Run INSIDE a vLLM venv: parse each rendered config as vLLM's own CLI would, print one JSON line per case.

Usage: python parse_check.py CASE.json  (a list of {"name", "argv"}: argv as the unit's ExecStart
passes it after the program, with --config pointing at the rendered vllm.yaml). A case passes when
vLLM's parser (FlexibleArgumentParser + make_arg_parser, the `vllm serve` parser) accepts the
config and the flags, and EngineArgs.from_cli_args builds engine args from them.
"""

import json
import sys

from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.utils.argparse_utils import FlexibleArgumentParser

try:  # vLLM 0.32 (the lab's CPU build)
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
except ImportError:  # vLLM 0.26
    from vllm.entrypoints.openai.cli_args import make_arg_parser


def check(argv: list[str]) -> dict:
    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    try:
        ns = parser.parse_args(argv)
        engine = AsyncEngineArgs.from_cli_args(ns)
    except SystemExit as exc:  # argparse's way of rejecting: the message went to stderr
        return {"ok": False, "error": f"argparse exit {exc.code}"}
    except Exception as exc:  # noqa: BLE001 - report whatever vLLM raised, by name
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    keys = ["tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "nnodes", "node_rank",
            "master_addr", "data_parallel_size_local", "data_parallel_start_rank", "data_parallel_address",
            "enable_expert_parallel", "disable_custom_all_reduce", "max_model_len", "enable_eplb", "enable_dbo",
            "all2all_backend", "quantization", "kv_cache_dtype", "speculative_config", "max_num_seqs",
            "max_num_batched_tokens", "eplb_config", "kv_offloading_size", "kv_offloading_backend",
            "kv_transfer_config"]
    seen = {k: getattr(engine, k, None) for k in keys}
    seen["headless"] = getattr(ns, "headless", None)
    passes = getattr(getattr(engine, "compilation_config", None), "pass_config", None)
    seen["fuse_allreduce_rms"] = getattr(passes, "fuse_allreduce_rms", None) if passes is not None else None
    return {"ok": True, "engine": seen}


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    for case in cases:
        print(json.dumps({"name": case["name"], **check(case["argv"])}, default=str), flush=True)
