"""Warm a freshly started vLLM before it gets users: the first requests pay for JIT and caches.

Measured on a real H200 (vLLM 0.26): the first wave after a start stalled 6-7 s while the
sampler's Triton kernels compiled, and top-p-only requests compile a different variant than
top-k ones. So the warm-up sends what users send: a common system prompt (prefix caching starts
warm), one long prompt (the big prefill paths), and a concurrent burst in every sampling variant
the spec lists. Runs on the node through the host agent (only `requests` needed); prints JSON.

    python -m r1deploy.serving.warmup URL --model NAME [--concurrency 8] [--long-tokens 1024] ...
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import requests

from r1deploy.serving.smoke import _headers, read_key, stream_chat

_FILLER = ["the", "fleet", "serves", "every", "request", "while", "nodes", "restart", "one", "batch",
           "at", "a", "time", "and", "each", "node", "proves", "itself", "before", "it", "rejoins"]


@dataclass
class WarmRequest:
    kind: str  # system-prompt | long-prompt | burst
    sampling: dict
    ok: bool
    ttft_ms: float | None
    seconds: float
    detail: str = ""


def _count_tokens(url: str, model: str, text: str, headers: dict, timeout: float) -> int | None:
    try:
        r = requests.post(f"{url}/tokenize", json={"model": model, "prompt": text}, headers=headers,
                          timeout=timeout)
        r.raise_for_status()
        return int(r.json()["count"])
    except (requests.RequestException, ValueError, KeyError):
        return None


def long_prompt(url: str, model: str, tokens: int, headers: dict, timeout: float) -> str:
    """Filler text of about `tokens` tokens, measured with the server's own tokenizer."""
    words = max(8, tokens // 2)
    text = " ".join(_FILLER[i % len(_FILLER)] for i in range(words))
    counted = _count_tokens(url, model, text, headers, timeout)
    if counted:  # scale to the target, staying under it
        words = max(8, int(words * tokens / counted * 0.95))
        text = " ".join(_FILLER[i % len(_FILLER)] for i in range(words))
    return text


def _one(url: str, model: str, kind: str, messages: list, sampling: dict, max_tokens: int,
         headers: dict, timeout: float) -> WarmRequest:
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, **sampling}
    try:
        got = stream_chat(url, body, headers, timeout)
        ok = got.done and bool((got.usage or {}).get("completion_tokens"))
        return WarmRequest(kind, sampling, ok, got.ttft_ms, round(got.seconds, 3),
                           "" if ok else "stream cut or nothing generated")
    except (requests.RequestException, ValueError, KeyError) as exc:
        return WarmRequest(kind, sampling, False, None, 0.0, f"{type(exc).__name__}: {exc}")


def warm_up(url: str, model: str, *, system_prompt: str, sampling: list[dict], concurrency: int = 8,
            long_tokens: int = 1024, max_tokens: int = 16, api_key: str | None = None,
            timeout: float = 300) -> list[WarmRequest]:
    url = url.rstrip("/")
    headers = _headers(api_key)
    sampling = sampling or [{"temperature": 0.6}]
    system = [{"role": "system", "content": system_prompt}]
    done = [_one(url, model, "system-prompt", system + [{"role": "user", "content": "Hello."}],
                 sampling[0], max_tokens, headers, timeout)]
    text = long_prompt(url, model, long_tokens, headers, timeout)
    done.append(_one(url, model, "long-prompt", [{"role": "user", "content": text}], sampling[0],
                     max_tokens, headers, timeout))
    # The burst: every sampling variant, concurrently, so the batched sampler paths compile now.
    jobs = [(sampling[i % len(sampling)], i) for i in range(max(concurrency, len(sampling)))]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        done += pool.map(lambda job: _one(
            url, model, "burst", system + [{"role": "user", "content": f"Question {job[1]}: what is {job[1]} + 2?"}],
            job[0], max_tokens, headers, timeout), jobs)
    return done


def summary(requests_done: list[WarmRequest]) -> dict:
    ttfts = sorted(r.ttft_ms for r in requests_done if r.ttft_ms is not None)
    return {
        "ok": all(r.ok for r in requests_done),
        "requests": len(requests_done),
        "failed": sum(not r.ok for r in requests_done),
        "ttft_ms_max": round(ttfts[-1], 1) if ttfts else None,
        "ttft_ms_median": round(ttfts[len(ttfts) // 2], 1) if ttfts else None,
        "detail": [asdict(r) for r in requests_done],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m r1deploy.serving.warmup", description=__doc__.split("\n\n")[0])
    p.add_argument("url")
    p.add_argument("--model", required=True)
    p.add_argument("--system-prompt", default="You are a helpful assistant.")
    p.add_argument("--sampling", default='[{"temperature": 0.6}]', help="JSON list of sampling dicts")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--long-tokens", type=int, default=1024)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--api-key-file", help="file holding the API key (never in argv)")
    args = p.parse_args(argv)
    key = read_key(args.api_key_file)
    done = warm_up(args.url, args.model, system_prompt=args.system_prompt, sampling=json.loads(args.sampling),
                   concurrency=args.concurrency, long_tokens=args.long_tokens, max_tokens=args.max_tokens,
                   api_key=key, timeout=args.timeout)
    result = summary(done)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
