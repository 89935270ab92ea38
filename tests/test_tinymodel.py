"""The tiny model: shaped like R1-Distill-Qwen, loadable layout, same bytes every build."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import jinja2
import numpy as np
from hubmirror import tiny_model, tinymodel  # noqa: F401
from tokenizers import Tokenizer


def _header(path: Path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def _digests(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_same_bytes_every_build(tmp_path, tiny_model):  # noqa: F811
    again = tinymodel.build(tmp_path / "again")
    assert _digests(again) == _digests(tiny_model)


def test_config_is_qwen2_like_r1_distill(tiny_model):  # noqa: F811
    cfg = json.loads((tiny_model / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and cfg["model_type"] == "qwen2"
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["num_key_value_heads"], cfg["intermediate_size"], cfg["vocab_size"]) == (128, 2, 4, 2, 256, 4096)
    assert cfg["torch_dtype"] == "bfloat16" and cfg["tie_word_embeddings"] is False
    gen = json.loads((tiny_model / "generation_config.json").read_text())
    assert (gen["temperature"], gen["top_p"]) == (0.6, 0.95)


def test_shards_hold_every_qwen2_tensor_in_bf16(tiny_model):  # noqa: F811
    cfg = json.loads((tiny_model / "config.json").read_text())
    index = json.loads((tiny_model / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2
    found: dict[str, tuple] = {}
    for shard in shards:
        for name, info in _header(tiny_model / shard).items():
            if name == "__metadata__":
                continue
            assert info["dtype"] == "BF16" and index["weight_map"][name] == shard
            found[name] = tuple(info["shape"])
    assert found == tinymodel.tensor_shapes(cfg)
    assert found["model.layers.0.self_attn.k_proj.weight"] == (64, 128)
    assert found["model.layers.1.self_attn.q_proj.bias"] == (128,)
    assert found["lm_head.weight"] == (4096, 128)
    total = sum(int(np.prod(s)) * 2 for s in found.values())
    assert index["metadata"]["total_size"] == total


def test_norm_weights_are_one_and_weights_small(tiny_model):  # noqa: F811
    shard = tiny_model / "model-00002-of-00002.safetensors"
    header = _header(shard)
    data_start = 8 + struct.unpack("<Q", shard.read_bytes()[:8])[0]
    raw = shard.read_bytes()[data_start:]

    def tensor(name: str) -> np.ndarray:
        a, b = header[name]["data_offsets"]
        bits = np.frombuffer(raw[a:b], dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32)

    assert np.all(tensor("model.norm.weight") == 1.0)
    lm_head = tensor("lm_head.weight")
    assert 0.01 < lm_head.std() < 0.03


def test_tokenizer_has_r1_special_tokens(tiny_model):  # noqa: F811
    tok = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    vocab = json.loads((tiny_model / "config.json").read_text())["vocab_size"]
    assert tok.get_vocab_size() <= vocab
    for t in ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
              "<think>", "</think>"]:
        assert tok.encode(t, add_special_tokens=False).tokens == [t]
    enc = tok.encode("<｜Assistant｜><think>\nsix</think>42")
    assert enc.tokens[0] == "<｜begin▁of▁sentence｜>"
    # <think> is a plain token, as in R1-Distill: it survives decoding for the reasoning parser.
    assert tok.decode(enc.ids, skip_special_tokens=True) == "<think>\nsix</think>42"


def test_chat_template_opens_a_think_block(tiny_model):  # noqa: F811
    cfg = json.loads((tiny_model / "tokenizer_config.json").read_text())
    template = jinja2.Environment().from_string(cfg["chat_template"])
    messages = [{"role": "user", "content": "What is 7 times 6?"},
                {"role": "assistant", "content": "<think>\n7*6</think>42"},
                {"role": "user", "content": "And 6 times 7?"}]
    prompt = template.render(messages=messages, bos_token=cfg["bos_token"], add_generation_prompt=True)
    assert prompt == ("<｜begin▁of▁sentence｜><｜User｜>What is 7 times 6?<｜Assistant｜>42<｜end▁of▁sentence｜>"
                      "<｜User｜>And 6 times 7?<｜Assistant｜><think>\n")
    assert cfg["eos_token"] == "<｜end▁of▁sentence｜>" and cfg["model_max_length"] >= 2048


def test_knobs_build_a_bigger_model(tmp_path):
    out = tinymodel.build(tmp_path / "big", layers=4, hidden=256, intermediate=512, shards=3)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 3
    assert "model.layers.3.mlp.down_proj.weight" in index["weight_map"]
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 256
