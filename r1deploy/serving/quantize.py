"""Quantize a pulled model with llm-compressor, gate it on quality, publish it beside the source.

    python -m r1deploy.serving.quantize run --src <root>/<org>--<name>/<commit> --scheme w8a8_int8 \\
        --llmcompressor-version 0.14.0.1 [--torch-version 2.13.0+cpu] [--max-loss-pct 1.0]
    python -m r1deploy.serving.quantize status --src ... --scheme ... (same recipe arguments): JSON manifest or {}

Runs in its own virtualenv (llm-compressor's pins clash with vLLM's): this module imports only
the standard library at the top; torch, transformers and llm-compressor are imported inside
`run`. The controller imports it too, to name the output directory of a spec.

Output: ``<root>/<org>--<name>/<commit>-<scheme>-<recipe hash>/`` with the compressed-tensors
checkpoint, the source's tokenizer files and ``.r1deploy-quant.json`` (source commit, recipe and
its hash, tool versions, the quality numbers). It is built in a temporary sibling and renamed
into place only when complete: the directory exists only with its manifest. The recipe hash
covers everything that decides the output (scheme, modifiers, calibration text, sample count,
sequence length, tool versions), so the same inputs find the same directory and do no work.

Quality gate: mean token log-prob of a fixed local text (``data/quant/eval.txt``, never used
for calibration) under the source and under the quantized checkpoint as saved (reloaded with
transformers, which decompresses it); loss % = relative perplexity increase. Over the threshold: exit 5 (the manifest
still records both numbers, so a converge reports them without recomputing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

MANIFEST = ".r1deploy-quant.json"
SOURCE_MANIFEST = ".r1deploy-manifest.json"  # the weights agent's
SCHEMES = ("fp8_dynamic", "w8a8_int8", "w4a16")
GATE_EXIT = 5
# Files the model's save writes itself; everything else small is copied from the source.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_SAVED_BY_MODEL = {"config.json", "model.safetensors.index.json", "generation_config.json"}

# The recipes, as data: what is hashed is exactly what runs.
RECIPES: dict[str, list[dict[str, Any]]] = {
    # Weights FP8 per channel, activations FP8 per token at run time: no calibration data.
    "fp8_dynamic": [{"modifier": "QuantizationModifier", "targets": ["Linear"], "scheme": "FP8_DYNAMIC",
                     "ignore": ["lm_head"]}],
    # INT8 weights and activations: SmoothQuant moves activation outliers into the weights, then GPTQ.
    "w8a8_int8": [{"modifier": "SmoothQuantModifier", "smoothing_strength": 0.8},
                  {"modifier": "GPTQModifier", "targets": ["Linear"], "scheme": "W8A8", "ignore": ["lm_head"]}],
    # INT4 weights in groups of 128, 16-bit activations, GPTQ.
    "w4a16": [{"modifier": "GPTQModifier", "targets": ["Linear"], "scheme": "W4A16", "ignore": ["lm_head"]}],
}
NEEDS_CALIBRATION = {"w8a8_int8", "w4a16"}
CALIBRATION_SAMPLES = 32
MAX_SEQ_LEN = 256


def data_text(name: str) -> str:
    return resources.files("r1deploy").joinpath("data", "quant", name).read_text()


def recipe(scheme: str, llmcompressor_version: str, torch_version: str | None = None,
           samples: int = CALIBRATION_SAMPLES, max_seq_len: int = MAX_SEQ_LEN) -> dict[str, Any]:
    """Everything that decides the quantized output of a given source commit."""
    if scheme not in RECIPES:
        raise ValueError(f"unknown quantization scheme {scheme!r} (known: {', '.join(SCHEMES)})")
    calibrated = scheme in NEEDS_CALIBRATION
    return {
        "scheme": scheme,
        "modifiers": RECIPES[scheme],
        "calibration_sha256": hashlib.sha256(data_text("calibration.txt").encode()).hexdigest() if calibrated else None,
        "calibration_samples": samples if calibrated else 0,
        "max_seq_len": max_seq_len,
        "llmcompressor": llmcompressor_version,
        "torch": torch_version,
    }


def recipe_hash(rec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:12]


def output_dir(source_dir: str, scheme: str, rec_hash: str) -> str:
    """`<base>/<commit>-<scheme>-<hash>` beside the source `<base>/<commit>`."""
    return f"{source_dir.rstrip('/')}-{scheme}-{rec_hash}"


def native_quantization(config: dict[str, Any]) -> str | None:
    """How a checkpoint is quantized already (R1 671B ships FP8 blocks), from its config.json."""
    q = config.get("quantization_config")
    if not q:
        return None
    method = q.get("quant_method", "?")
    detail = q.get("fmt") or q.get("format") or ""
    block = q.get("weight_block_size")
    return f"{method}{' ' + detail if detail else ''}{f' blocks {block}' if block else ''}"


def read_manifest(out: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        return json.loads((Path(out) / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def gate(manifest: dict[str, Any], max_loss_pct: float) -> tuple[bool, str]:
    """Whether the recorded quality passes the threshold, and a line that shows both numbers."""
    q = manifest["quality"]
    line = (f"{manifest['scheme']}: perplexity {q['source_ppl']:.4f} (source) -> {q['quantized_ppl']:.4f} "
            f"(quantized), mean log-prob {q['source_logprob']:.5f} -> {q['quantized_logprob']:.5f}, "
            f"loss {q['loss_pct']:+.3f}% (limit {max_loss_pct}%) on {q['tokens']} tokens")
    if "mean_abs_token_logprob_delta" in q:
        line += f"; per-token log-prob moved {q['mean_abs_token_logprob_delta']:.5f} on average"
    return q["loss_pct"] <= max_loss_pct, line


# --------------------------------------------------------------------------- the heavy part

def _tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("llmcompressor", "compressed-tensors", "transformers", "torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "missing"
    return out


def _modifiers(rec: dict[str, Any]) -> list[Any]:
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    try:
        from llmcompressor.modifiers.smoothquant import SmoothQuantModifier
    except ImportError:  # moved in later releases
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
    kinds = {"QuantizationModifier": QuantizationModifier, "GPTQModifier": GPTQModifier,
             "SmoothQuantModifier": SmoothQuantModifier}
    return [kinds[m["modifier"]](**{k: v for k, v in m.items() if k != "modifier"}) for m in rec["modifiers"]]


def _chunks(tokenizer: Any, text: str, max_len: int, per_line: bool = False) -> list[list[int]]:
    """Token windows of at most max_len, one text line after another (or one per line)."""
    windows: list[list[int]] = []
    current: list[int] = []
    for line in (ln.strip() for ln in text.splitlines()):
        if not line:
            continue
        ids = tokenizer(line + "\n", add_special_tokens=False)["input_ids"]
        if current and (per_line or len(current) + len(ids) > max_len):
            windows.append(current)
            current = []
        current.extend(ids[:max_len])
    if current:
        windows.append(current)
    bos = tokenizer.bos_token_id
    return [[bos, *w] if bos is not None else w for w in windows]


def token_logprobs(model: Any, windows: list[list[int]]) -> list[float]:
    """Log-probability of each predicted token (every token after the first of each window)."""
    import torch

    out: list[float] = []
    with torch.no_grad():
        for ids in windows:
            x = torch.tensor([ids])
            logits = model(input_ids=x).logits[0, :-1].float()
            out += torch.log_softmax(logits, dim=-1).gather(1, x[0, 1:].unsqueeze(1))[:, 0].tolist()
    return out


def _load(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    model.eval()
    return model


def run(src: str, scheme: str, llmcompressor_version: str, torch_version: str | None = None,
        max_loss_pct: float = 1.0, samples: int = CALIBRATION_SAMPLES, max_seq_len: int = MAX_SEQ_LEN,
        fail_if_native: bool = False, log: Any = sys.stderr) -> dict[str, Any]:
    source = Path(src)
    config = json.loads((source / "config.json").read_text())
    native = native_quantization(config)
    if native:
        msg = f"{source} is natively quantized ({native}): nothing to do, the source is served as is"
        if fail_if_native:  # the caller expected an output directory (its catalog did not know)
            raise SystemExit(f"quantize: {msg}; set quant_scheme = 'none' for this model")
        print(f"quantize: {msg}", file=log, flush=True)
        return {"changed": False, "skipped": msg}
    rec = recipe(scheme, llmcompressor_version, torch_version, samples, max_seq_len)
    rh = recipe_hash(rec)
    out = Path(output_dir(str(source), scheme, rh))
    existing = read_manifest(out)
    if existing and existing.get("recipe_hash") == rh:
        ok, line = gate(existing, max_loss_pct)
        print(f"quantize: {out} already built; {line}", file=log, flush=True)
        return {"changed": False, "dir": str(out), "passed": ok, **existing}

    tools = _tool_versions()
    if tools["llmcompressor"] != llmcompressor_version:
        raise SystemExit(f"llm-compressor {tools['llmcompressor']} installed, the spec wants {llmcompressor_version}")
    import torch
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = _load(source)
    windows = _chunks(tokenizer, data_text("eval.txt"), max_seq_len)
    src_tokens = token_logprobs(model, windows)
    src_lp = sum(src_tokens) / len(src_tokens)
    print(f"quantize: source mean log-prob {src_lp:.5f} over {len(src_tokens)} tokens", file=log, flush=True)

    from llmcompressor import oneshot

    kwargs: dict[str, Any] = {}
    if scheme in NEEDS_CALIBRATION:
        from datasets import Dataset

        calib = _chunks(tokenizer, data_text("calibration.txt"), max_seq_len, per_line=True)[:samples]
        kwargs = dict(dataset=Dataset.from_dict({"input_ids": calib, "attention_mask": [[1] * len(c) for c in calib]}),
                      num_calibration_samples=len(calib), max_seq_length=max_seq_len)
    print(f"quantize: oneshot {scheme} ({', '.join(m['modifier'] for m in rec['modifiers'])})", file=log, flush=True)
    oneshot(model=model, recipe=_modifiers(rec), **kwargs)

    base_manifest = read_manifest_source(source)
    tmp = Path(tempfile.mkdtemp(dir=source.parent, prefix=f".{out.name}.partial-"))
    try:
        model.save_pretrained(tmp, save_compressed=True)
        del model
        for f in sorted(source.iterdir()):
            if (f.is_file() and not f.name.startswith(".") and not f.name.endswith(_WEIGHT_SUFFIXES)
                    and f.name not in _SAVED_BY_MODEL and not (tmp / f.name).exists()):
                shutil.copy2(f, tmp / f.name)
        if (source / "generation_config.json").exists():
            shutil.copy2(source / "generation_config.json", tmp / "generation_config.json")
        # The gate scores the artifact vLLM will load: the saved checkpoint, reloaded (decompressed).
        q_tokens = token_logprobs(_load(tmp), windows)
        q_lp = sum(q_tokens) / len(q_tokens)
        src_ppl, q_ppl = math.exp(-src_lp), math.exp(-q_lp)
        quality = {"metric": "perplexity of data/quant/eval.txt", "tokens": len(src_tokens),
                   "eval_sha256": hashlib.sha256(data_text("eval.txt").encode()).hexdigest(),
                   "source_logprob": src_lp, "quantized_logprob": q_lp, "source_ppl": src_ppl,
                   "quantized_ppl": q_ppl, "loss_pct": 100.0 * (q_ppl - src_ppl) / src_ppl,
                   # How much the quantization moved each token's log-prob, whatever the average did.
                   "mean_abs_token_logprob_delta": sum(abs(a - b) for a, b in zip(src_tokens, q_tokens, strict=True))
                   / len(src_tokens),
                   "evaluated": "the saved compressed-tensors checkpoint, reloaded with transformers"}
        manifest = {
            "source_repo": base_manifest.get("repo"), "source_commit": base_manifest.get("commit", source.name),
            "source_dir": str(source), "scheme": scheme, "recipe_hash": rh, "recipe": rec, "tools": tools,
            "quality": quality, "seconds": round(time.monotonic() - started, 1),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "files": [{"path": p.name, "size": p.stat().st_size} for p in sorted(tmp.iterdir()) if p.is_file()],
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        for p in tmp.iterdir():
            p.chmod(0o644)
        tmp.chmod(0o755)
        if out.exists():  # an older build without a matching manifest: replaced whole
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ok, line = gate(manifest, max_loss_pct)
    print(f"quantize: wrote {out} in {manifest['seconds']}s; {line}", file=log, flush=True)
    return {"changed": True, "dir": str(out), "passed": ok, **manifest}


def read_manifest_source(source: Path) -> dict[str, Any]:
    try:
        return json.loads((source / SOURCE_MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


# --------------------------------------------------------------------------- CLI

def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--src", required=True, help="the pulled source directory <root>/<org>--<name>/<commit>")
    p.add_argument("--scheme", required=True, choices=SCHEMES)
    p.add_argument("--llmcompressor-version", required=True)
    p.add_argument("--torch-version")
    p.add_argument("--samples", type=int, default=CALIBRATION_SAMPLES)
    p.add_argument("--max-seq-len", type=int, default=MAX_SEQ_LEN)
    p.add_argument("--max-loss-pct", type=float, default=1.0)
    p.add_argument("--fail-if-native", action="store_true", help="a natively quantized source is an error")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m r1deploy.serving.quantize", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    _args(sub.add_parser("run", help="quantize (unless already built), evaluate, publish; exit 5 over the limit"))
    _args(sub.add_parser("status", help="JSON manifest of the output directory for these inputs, or {}"))
    args = p.parse_args(argv)
    if args.command == "status":
        rec = recipe(args.scheme, args.llmcompressor_version, args.torch_version, args.samples, args.max_seq_len)
        print(json.dumps(read_manifest(output_dir(args.src, args.scheme, recipe_hash(rec))) or {}))
        return 0
    result = run(args.src, args.scheme, args.llmcompressor_version, args.torch_version, args.max_loss_pct,
                 args.samples, args.max_seq_len, args.fail_if_native)
    print(json.dumps({k: result.get(k) for k in ("changed", "dir", "passed", "skipped", "quality", "recipe_hash")}))
    return 0 if result.get("skipped") or result["passed"] else GATE_EXIT


if __name__ == "__main__":
    sys.exit(main())
