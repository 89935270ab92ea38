"""Build a tiny random-weight model shaped like DeepSeek-R1-Distill-Qwen, offline and without torch.

Qwen2ForCausalLM config, BF16 safetensors in several shards with an index, a byte-level BPE
tokenizer trained on generated text with R1's special tokens and R1-Distill's chat template.
Same arguments -> same bytes, so the mirror's commit id for it is stable.

    python lab/tinymodel.py OUT_DIR [--layers 2] [--hidden 128] [--intermediate 256] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
from pathlib import Path

import numpy as np

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
TOOL_TOKENS = [
    "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
    "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>",
    "<｜tool▁output▁end｜>", "<｜tool▁sep｜>",
]
SPECIAL_TOKENS = [BOS, EOS, USER, ASSISTANT, *TOOL_TOKENS]
# Plain added tokens, as in R1-Distill: they survive decoding, so the reasoning parser sees them.
THINK_TOKENS = ["<think>", "</think>"]

# DeepSeek-R1-Distill-Qwen's chat template (tokenizer_config.json of the published models):
# drops earlier turns' reasoning, and the generation prompt opens a <think> block.
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}"
    "{{bos_token}}{{ns.system_prompt}}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}"
    "{%- for tool in message['tool_calls']%}{%- if not ns.is_first %}"
    "{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + "
    "tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + "
    "'<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}{%- else %}"
    "{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + "
    "'```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
    "{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %}"
    "{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}"
    "{%- else %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}"
    "{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}"
    "{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"
    "{%- set ns.is_output_first = false %}{%- else %}"
    "{{'\\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}"
    "{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
)

_WORD_TEXT = ("the a of to and in is was for on that with as it by at from this be are or an not which "
         "model weight token shard node fleet server answer think reason number seven six times "
         "what why how when where who first then next last because so therefore result check "
         "sum product equal more less one two three four five eight nine ten hundred thousand")
WORDS = _WORD_TEXT.split()


# --------------------------------------------------------------------------- text and tokenizer

def corpus(seed: int, n_lines: int = 6000) -> list[str]:
    """Deterministic English-ish text plus invented words, rich enough for a 4k BPE vocabulary."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghklmnprstvwz" for v in "aeiou"] + ["th", "sh", "ch", "qu", "str"]
    invented = ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(3000)]
    lines = []
    for _ in range(n_lines):
        kind = rng.random()
        if kind < 0.3:
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            lines.append(f"What is {a} times {b}? {a} times {b} is {a * b}.")
        else:
            pool = WORDS if kind < 0.65 else invented
            words = [rng.choice(pool) for _ in range(rng.randint(4, 14))]
            lines.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ","]))
    return lines


def build_tokenizer(seed: int, vocab_size: int):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(THINK_TOKENS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    bos_id = tok.token_to_id(BOS)
    # Like R1-Distill's tokenizer.json: BOS is prepended when special tokens are requested.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tok


# --------------------------------------------------------------------------- weights

def to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round-to-nearest-even; numpy has no bf16."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype(np.uint16)


def tensor_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Names and shapes transformers/vLLM load for Qwen2ForCausalLM, in checkpoint order."""
    h, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * (h // cfg["num_attention_heads"])
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.q_proj.bias": (h,),
            p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (h, h),
            p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
        })
    shapes["model.norm.weight"] = (h,)
    shapes["lm_head.weight"] = (vocab, h)
    return shapes


def random_weights(cfg: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in tensor_shapes(cfg).items():
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            values = np.ones(shape, dtype=np.float32)
        elif name.endswith(".bias"):
            values = np.zeros(shape, dtype=np.float32)
        else:
            values = rng.normal(0.0, cfg["initializer_range"], size=shape).astype(np.float32)
        out[name] = to_bf16(values)
    return out


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Write BF16 tensors (given as uint16 bit patterns) with a hand-made safetensors header."""
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, arr in tensors.items():
        header[name] = {"dtype": "BF16", "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format wants the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for arr in tensors.values():
            f.write(arr.astype("<u2", copy=False).tobytes())


def split_shards(tensors: dict[str, np.ndarray], n_shards: int) -> list[dict[str, np.ndarray]]:
    """Greedy split in checkpoint order into n_shards of roughly equal bytes."""
    total = sum(a.nbytes for a in tensors.values())
    target = total / n_shards
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, arr in tensors.items():
        if size >= target and len(shards) < n_shards:
            shards.append({})
            size = 0
        shards[-1][name] = arr
        size += arr.nbytes
    return shards


def write_weights(out: Path, tensors: dict[str, np.ndarray], n_shards: int) -> None:
    shards = split_shards(tensors, n_shards)
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(out / fname, shard)
        weight_map.update({name: fname for name in shard})
    total = sum(a.nbytes for a in tensors.values())
    _write_json(out / "model.safetensors.index.json",
                {"metadata": {"total_size": total}, "weight_map": weight_map})


# --------------------------------------------------------------------------- configs

def model_config(layers: int, hidden: int, intermediate: int, vocab: int, bos_id: int, eos_id: int) -> dict:
    heads, kv_heads = 4, 2
    if hidden % heads:
        raise ValueError(f"hidden {hidden} must be a multiple of {heads} heads")
    # Values as R1-Distill-Qwen ships them, scaled down where they are sizes.
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "max_position_embeddings": 4096,
        "max_window_layers": layers,
        "model_type": "qwen2",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000,
        "sliding_window": 4096,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.44.0",
        "use_cache": True,
        "use_mrope": False,
        "use_sliding_window": False,
        "vocab_size": vocab,
    }


def tokenizer_config(tok) -> dict:
    added = {
        str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                  "single_word": False, "special": t in SPECIAL_TOKENS}
        for t in [*SPECIAL_TOKENS, *THINK_TOKENS]
    }
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS,
        "legacy": True,
        "model_max_length": 4096,
        "pad_token": EOS,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def generation_config(bos_id: int, eos_id: int) -> dict:
    return {"_from_model_config": True, "bos_token_id": bos_id, "eos_token_id": eos_id,
            "do_sample": True, "temperature": 0.6, "top_p": 0.95, "transformers_version": "4.44.0"}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def build(out_dir: str | Path, *, layers: int = 2, hidden: int = 128, intermediate: int = 256,
          vocab: int = 4096, shards: int = 2, seed: int = 0) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(seed, vocab)
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
    cfg = model_config(layers, hidden, intermediate, vocab, bos_id, eos_id)
    write_weights(out, random_weights(cfg, seed), shards)
    tok.save(str(out / "tokenizer.json"))
    _write_json(out / "config.json", cfg)
    _write_json(out / "tokenizer_config.json", tokenizer_config(tok))
    _write_json(out / "special_tokens_map.json", {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS})
    _write_json(out / "generation_config.json", generation_config(bos_id, eos_id))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128, help="multiple of 4 (attention heads)")
    p.add_argument("--intermediate", type=int, default=256)
    p.add_argument("--shards", type=int, default=2, help="safetensors shards (>= 2 exercises the index)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = build(args.out_dir, layers=args.layers, hidden=args.hidden, intermediate=args.intermediate,
                shards=args.shards, seed=args.seed)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
