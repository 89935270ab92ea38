"""Issue 22 items 2 and 3: FP8 plans, the batching budget for the SLO, R1's recipe per layout."""

from r1deploy.planner import plan
from r1deploy.planner.catalog import find_gpu
from r1deploy.planner.profiles import ModelSpec
from r1deploy.planner.recipe import Slo, batching_budget, decode_step_ms, slo_batch
from r1deploy.serving.ep_kernels import plan_engine_args
from r1deploy.spec import spec_from_host_data

SLO = Slo(1.0, 50.0)


def _plan(model, gpu, n=1, **kw):
    return plan(ModelSpec.from_catalog(model), find_gpu(gpu), n, **kw)


def test_issue22_item2_fp8_opt_in_plans_fp8_weights_and_kv_for_a_bf16_distill_on_hopper():
    p = _plan("DeepSeek-R1-Distill-Qwen-32B", "H100 SXM", fp8=True, slo=SLO)
    bf16 = _plan("DeepSeek-R1-Distill-Qwen-32B", "H100 SXM", slo=SLO)
    args = p.engine_args()
    assert args["quantization"] == "fp8" and args["kv-cache-dtype"] == "fp8"
    assert p.weights_gib_per_gpu < 0.55 * bf16.weights_gib_per_gpu
    assert p.kv_cache_tokens > 6 * bf16.kv_cache_tokens  # weights freed + 1 byte a value
    text = "\n".join(p.reasons)
    assert "FP8 weights" in text and "FP8 KV cache" in text and "quant_scheme=fp8_dynamic" in text


def test_issue22_item2_without_the_opt_in_the_plan_only_suggests_fp8_with_its_trade():
    p = _plan("DeepSeek-R1-Distill-Qwen-32B", "H100 SXM", slo=SLO)
    assert "quantization" not in p.engine_args() and "kv-cache-dtype" not in p.engine_args()
    assert any(s.startswith("plan_fp8: true would plan FP8 weights and FP8 KV") and "quality" in s
               for s in p.suggestions)


def test_issue22_item2_no_fp8_on_gpus_without_it_or_when_a_quantized_checkpoint_is_served():
    a100 = _plan("DeepSeek-R1-Distill-Qwen-32B", "A100 80GB", fp8=True, slo=SLO)
    assert "quantization" not in a100.engine_args() and not any("FP8" in r for r in a100.reasons)
    staged = _plan("DeepSeek-R1-Distill-Qwen-32B", "H100 SXM", fp8=True, slo=SLO, quantization="w4a16")
    assert "quantization" not in staged.engine_args()


def test_issue22_item2_fp8_kv_only_where_it_raises_the_slo_concurrency():
    """7B on an H200: KV room to spare, but half the KV bytes per step lets a larger batch meet TPOT.
    R1 DP8 at a 20 ms TPOT: no batch meets it at all, so FP8 KV buys nothing and is not chosen."""
    roomy = _plan("DeepSeek-R1-Distill-Qwen-7B", "H200", fp8=True, slo=Slo(1.0, 20.0))
    assert roomy.engine_args()["kv-cache-dtype"] == "fp8"
    assert any("each decode step reads half the KV bytes" in r for r in roomy.reasons)
    tight = _plan("DeepSeek-R1", "H200", 8, fp8=True, slo=Slo(1.0, 20.0))
    assert "kv-cache-dtype" not in tight.engine_args()
    assert any(r.startswith("FP8 KV cache not chosen: one decode step") for r in tight.reasons)


def test_issue22_item2_r1_is_fp8_already_and_gets_the_kv_choice_with_its_reason():
    p = _plan("DeepSeek-R1", "H200", 8, fp8=True, slo=Slo())
    assert "quantization" not in p.engine_args()
    assert p.engine_args()["kv-cache-dtype"] == "fp8"
    assert any(r.startswith("DeepSeek-R1's weights are FP8 already; FP8 KV cache:") for r in p.reasons)


def test_issue22_item3_r1_dp_ep_gets_mtp_eplb_dbo_and_the_all2all_per_leaning():
    thr = _plan("DeepSeek-R1", "H200", 8, slo=Slo()).engine_args()
    assert thr["speculative-config"] == {"method": "mtp", "num_speculative_tokens": 1}
    assert thr["enable-eplb"] and thr["eplb-config"]["num_redundant_experts"] == 8
    assert (256 + 8) % 8 == 0
    assert thr["enable-dbo"] and thr["all2all-backend"] == "deepep_high_throughput"
    lat = _plan("DeepSeek-R1", "H200", 8, slo=Slo(), prefer="latency")
    assert lat.engine_args()["speculative-config"]["num_speculative_tokens"] == 3
    assert "enable-eplb" not in lat.engine_args()  # TP8: experts over the TP group
    assert any(r.startswith("EPLB and DBO not used") for r in lat.reasons)


def test_issue22_item3_pipeline_parallel_r1_skips_mtp_with_its_reason():
    p = _plan("DeepSeek-R1", "H100 SXM", 8, nodes=2, slo=Slo())
    assert p.pipeline_parallel_size == 2 and "speculative-config" not in p.engine_args()
    assert any(r.startswith("MTP not used") for r in p.reasons)


def test_issue22_item3_deepep_choices_are_dropped_where_the_kernels_are_not_installed():
    data = {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": "0" * 40, "plan_gpu": "H200",
            "plan_gpus_per_node": 8, "install_ep_kernels": []}
    spec = spec_from_host_data("h", data)
    args = plan_engine_args(spec, _plan("DeepSeek-R1", "H200", 8, slo=Slo()))
    assert "all2all-backend" not in args and "enable-dbo" not in args
    assert args["enable-eplb"] is True  # EPLB is vLLM's own, no DeepEP needed


def test_issue22_item2_batching_budget_follows_the_slo_and_the_spec_wins():
    p = _plan("DeepSeek-R1-Distill-Qwen-32B", "H100 SXM", fp8=True, slo=SLO)
    args = p.engine_args()
    assert args["max-num-batched-tokens"] == 512 and 64 <= args["max-num-seqs"] <= 512
    loose = _plan("DeepSeek-R1-Distill-Qwen-32B", "H100 SXM", fp8=True, slo=Slo(4.0, 100.0)).engine_args()
    assert loose["max-num-batched-tokens"] > args["max-num-batched-tokens"]
    assert loose["max-num-seqs"] >= args["max-num-seqs"]
    assert "max-num-seqs" not in _plan("DeepSeek-R1-Distill-Qwen-32B", "H100 SXM").engine_args()  # no SLO given
    pinned = _plan("DeepSeek-R1-Distill-Qwen-32B", "H100 SXM", fp8=True, slo=SLO, overrides={"max-num-seqs": 7})
    assert pinned.engine_args()["max-num-seqs"] == 7


def test_issue22_item6_a_dense_models_prefill_chunk_fits_one_step_within_the_tpot_slo():
    """Issue 22 (session 21, item a): a step carrying a prefill chunk is a decode step for every running
    request; for a dense model the chunk is sized so that step stays within the TPOT SLO (512 tokens for
    the 32B in FP8 on an H100 at 50 ms, was 2,048 by the TTFT rule), never below max_num_seqs (vLLM
    refuses that); a MoE keeps the TTFT rule (its expert GEMMs stay memory-bound at a chunk's size)."""
    from r1deploy.planner.recipe import COMPUTE_EFF, tflops

    gpu = find_gpu("H100 SXM")
    p = _plan("DeepSeek-R1-Distill-Qwen-32B", "H100 SXM", fp8=True, slo=SLO)
    args = p.engine_args()
    arch = ModelSpec.from_catalog("DeepSeek-R1-Distill-Qwen-32B").arch
    ms_per_token = 2 * arch.total_params() / (tflops(gpu, True) * 1e12 * COMPUTE_EFF) * 1000
    assert args["max-num-batched-tokens"] * ms_per_token <= SLO.tpot_ms < 2 * args["max-num-batched-tokens"] * ms_per_token
    assert args["max-num-batched-tokens"] >= args["max-num-seqs"]
    assert any("decodes ride on the compute-bound chunk" in r for r in p.reasons)
    seven = _plan("DeepSeek-R1-Distill-Qwen-7B", "H100 SXM", fp8=True, slo=SLO).engine_args()
    assert seven["max-num-batched-tokens"] == 2048 >= seven["max-num-seqs"]
    r1 = _plan("DeepSeek-R1", "H200", 8, slo=SLO).engine_args()
    assert r1["max-num-batched-tokens"] == 2048  # MoE: the TTFT rule, as before


def test_issue22_item2_the_slo_batch_is_the_largest_whose_step_fits():
    from r1deploy.planner.catalog import Architecture, find_model

    arch = Architecture.from_config(find_model("DeepSeek-R1-Distill-Qwen-7B").config)
    gpu = find_gpu("H100 SXM")
    b = slo_batch(arch, gpu, 14.2, 28672 * 2, SLO)
    assert decode_step_ms(arch, gpu, 14.2, 28672 * 2, b) <= 0.7 * 50 < decode_step_ms(arch, gpu, 14.2, 28672 * 2, b + 1)
    args, why = batching_budget(arch, gpu, SLO, 0)
    assert "max-num-seqs" not in args and "no batch meets it" in why[0]
