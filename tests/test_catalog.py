from pathlib import Path

import pytest

from r1deploy.planner.catalog import GPUS, MODELS, Architecture, find_gpu, find_model

FIX = Path("/work/shared/fixtures/gpu-hosts")


@pytest.mark.parametrize("entry", MODELS, ids=lambda m: m.name)
def test_config_parameters_match_the_weights_on_disk(entry):
    arch = Architecture.from_config(entry.config)
    params = arch.total_params()
    bytes_per_param = 1 if arch.linear_quant == "fp8" else 2
    # R1's disk size includes the 14B MTP layer and FP8 scales; distills are plain BF16.
    assert params * bytes_per_param == pytest.approx(entry.weight_bytes, rel=0.04)


def test_r1_is_671b_mla_moe_in_fp8():
    arch = Architecture.from_config(find_model("deepseek-ai/DeepSeek-R1").config)
    assert arch.total_params() / 1e9 == pytest.approx(671, abs=1)
    assert arch.is_mla and arch.is_moe and arch.linear_quant == "fp8"
    assert arch.kv_bytes_per_token_per_layer(2) * arch.layers == 61 * (512 + 64) * 2


def test_kv_bytes_per_token_for_gqa_distills():
    qwen7 = Architecture.from_config(find_model("DeepSeek-R1-Distill-Qwen-7B").config)
    llama70 = Architecture.from_config(find_model("DeepSeek-R1-Distill-Llama-70B").config)
    assert qwen7.layers * qwen7.kv_bytes_per_token_per_layer(2) == 2 * 28 * 4 * 128 * 2
    assert llama70.layers * llama70.kv_bytes_per_token_per_layer(2, tp=2) == 2 * 80 * 4 * 128 * 2
    # fewer KV heads than TP ranks: each rank still keeps one head
    assert qwen7.kv_bytes_per_token_per_layer(2, tp=8) == 2 * 1 * 128 * 2


@pytest.mark.parametrize("name", ["deepseek-ai/DeepSeek-R1-0528", "R1", "r1-distill-qwen-7b",
                                  "DeepSeek-R1-Distill-Llama-8B", "distill-llama-70b"])
def test_find_model_by_repo_id_name_or_alias(name):
    assert find_model(name) is not None


def test_unknown_model_is_none():
    assert find_model("meta-llama/Llama-3.1-8B") is None


@pytest.mark.parametrize(("smi_name", "entry"), [
    ("H200", "H200"), ("NVIDIA H200", "H200"), ("h100-sxm", "H100 SXM"),
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA H20", "H20"),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB"), ("NVIDIA A100-SXM4-40GB", "A100 40GB"),
    ("NVIDIA L40S", "L40S"), ("NVIDIA GeForce RTX 4090", "RTX 4090"), ("rtx3090", "RTX 3090"),
    ("AMD Instinct MI300X", "MI300X"), ("AMD Instinct MI250X", "MI250X"),
])
def test_find_gpu_maps_nvidia_smi_names(smi_name, entry):
    assert find_gpu(smi_name).name == entry


def test_real_h200_host_maps_to_the_catalog():
    line = (FIX / "h200x1-ubuntu2404" / "query-gpu.csv").read_text().splitlines()[1]
    fields = [f.strip() for f in line.split(",")]
    gpu = find_gpu(fields[2])
    assert gpu.name == "H200" and f"{gpu.memory_mib} MiB" == fields[4]


def test_h200_usable_memory_is_what_torch_reported_on_a_real_h200():
    # vLLM 0.26 on one H200 (tests/data/h200_vllm_observations.json): "total_memory=139.8GiB",
    # and 0.9 requested 125.82 GiB; a custom GPU with the same nvidia-smi memory keeps the ratio.
    from r1deploy.planner.catalog import custom_gpu

    h200 = find_gpu("NVIDIA H200")
    assert h200.usable_gib == 139.80 and round(0.9 * h200.usable_gib, 2) == 125.82
    assert custom_gpu(143771, like=h200).usable_gib == 139.80


def test_gpu_catalog_covers_the_seed_hardware():
    names = {g.name for g in GPUS}
    assert {"H200", "H100 SXM", "H100 PCIe", "H20", "A100 80GB", "A100 40GB", "L40S", "RTX 4090",
            "RTX 3090", "MI300X", "MI250X"} <= names
    assert find_gpu("MI250X").devices_per_package == 2
    assert find_gpu("H200").fp8 and not find_gpu("A100").fp8
    assert not find_gpu("RTX 4090").fast_interconnect and find_gpu("H100").fast_interconnect


def test_every_config_file_names_its_source():
    from importlib import resources

    folder = resources.files("r1deploy").joinpath("data", "models")
    sources = folder.joinpath("SOURCES.md").read_text()
    for entry in MODELS:
        assert entry.config_file in sources
        assert entry.sampling["temperature"] == 0.6
