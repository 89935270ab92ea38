"""Write a weight-less checkpoint at a catalog model's real shape, for vLLM's ``--load-format dummy``.

The directory gets the catalog's real ``config.json`` (r1deploy/data/models/), a byte-level BPE
tokenizer with R1's special tokens and chat template (lab/tinymodel.py), padded with filler
tokens up to the model's real vocabulary so every id the random model samples decodes, and a
generation config. No weight files: vLLM allocates the real-size weights on the GPU and fills
them with random values, so "Model loading took" and the KV cache figures are those of the
real model (the weights' bytes in GPU memory do not depend on their values).

Changes to the real config, none of which moves memory: ``bos_token_id``/``eos_token_id`` point
at this tokenizer's ids. Everything else is byte-for-byte the catalog's file.

    python bench/h200/make_checkpoint.py DeepSeek-R1-Distill-Qwen-7B OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lab import tinymodel  # noqa: E402
from r1deploy.planner.catalog import find_model, load_model_config  # noqa: E402

BASE_VOCAB = 4096


def padded_tokenizer(vocab_size: int, seed: int = 0):
    """tinymodel's 4k BPE tokenizer plus plain filler tokens up to vocab_size ids."""
    tok = tinymodel.build_tokenizer(seed, BASE_VOCAB)
    tok_json = json.loads(tok.to_str())
    vocab = tok_json["model"]["vocab"]
    # Added tokens (<think>, </think>) go into the model vocabulary at their own ids, else a
    # reload would renumber them past the fillers.
    for added in tok_json["added_tokens"]:
        vocab.setdefault(added["content"], added["id"])
    next_id = max(vocab.values()) + 1
    # Filler strings are printable ASCII, which byte-level BPE maps to itself: they decode as written.
    for i in range(next_id, vocab_size):
        vocab[f"[x{i}]"] = i
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps(tok_json, ensure_ascii=False))


def build(model: str, out_dir: str | Path, *, seed: int = 0) -> Path:
    entry = find_model(model)
    if entry is None:
        raise SystemExit(f"{model!r} is not in r1deploy's catalog")
    cfg = dict(load_model_config(entry.config_file))
    vocab = int(cfg.get("text_config", cfg)["vocab_size"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = padded_tokenizer(vocab, seed)
    if tok.get_vocab_size(with_added_tokens=True) != vocab:
        raise SystemExit(f"tokenizer has {tok.get_vocab_size()} ids, model {vocab}")
    bos, eos = tok.token_to_id(tinymodel.BOS), tok.token_to_id(tinymodel.EOS)
    cfg["bos_token_id"], cfg["eos_token_id"] = bos, eos
    tok.save(str(out / "tokenizer.json"))
    tcfg = tinymodel.tokenizer_config(tok)
    tcfg["model_max_length"] = int(cfg.get("max_position_embeddings") or 131072)
    files = {
        "config.json": cfg,
        "tokenizer_config.json": tcfg,
        "special_tokens_map.json": {"bos_token": tinymodel.BOS, "eos_token": tinymodel.EOS,
                                    "pad_token": tinymodel.EOS},
        "generation_config.json": tinymodel.generation_config(bos, eos),
        "r1deploy_checkpoint.json": {"catalog_model": entry.name, "repo_id": entry.repo_id,
                                     "config_file": entry.config_file, "weights": "none (load-format dummy)",
                                     "vocab_size": vocab, "tokenizer": f"byte-level BPE {BASE_VOCAB} + fillers"},
    }
    for name, data in files.items():
        (out / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="catalog name, alias or repo id, e.g. DeepSeek-R1-Distill-Qwen-7B")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = build(args.model, args.out_dir, seed=args.seed)
    print(f"{out}: {', '.join(sorted(f.name for f in out.iterdir()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
