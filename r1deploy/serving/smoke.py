"""Smoke tests that issue real completions against a node or the gateway and judge the answers.

Runs on the controller or, through the host agent, on a node itself (only `requests` needed).
An R1 reply starts in its reasoning (`<think>`): with a small token budget a healthy model is
often still thinking when it stops, so "an answer" means reasoning text for a reply cut at the
length limit, and content text for a reply that finished on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import requests

REASONING_KEYS = ("reasoning", "reasoning_content")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    latency_ms: float | None = None
    ttft_ms: float | None = None  # streamed checks: time to the first token
    tokens_per_s: float | None = None  # streamed checks: decode rate after it


@dataclass
class NodeReport:
    target: str
    url: str
    ok: bool = True
    checks: list[Check] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: dict) -> NodeReport:
        report = cls(target=raw["target"], url=raw["url"])
        for check in raw.get("checks", []):
            report.add(Check(**check))
        return report

    def add(self, check: Check) -> None:
        self.checks.append(check)
        self.ok = self.ok and check.ok


def _reasoning(obj: dict) -> str | None:
    for key in REASONING_KEYS:
        if key in obj:
            return obj[key] or ""
    return None


def _judge(reasoning: str | None, content: str | None, finish: str | None, usage: dict | None,
           require_reasoning: bool) -> tuple[bool, str]:
    problems = []
    if require_reasoning and reasoning is None:
        problems.append("no reasoning field (is --reasoning-parser deepseek_r1 set?)")
    if finish == "stop" and not (content or "").strip():
        problems.append("finished with empty content")
    if not (content or "").strip() and not (reasoning or "").strip():
        problems.append("neither reasoning nor content text")
    if not usage or not usage.get("completion_tokens"):
        problems.append("usage not counted")
    detail = (f"finish={finish} tokens={usage.get('completion_tokens') if usage else None} "
              f"reasoning={len(reasoning or '')}ch content={len(content or '')}ch")
    return not problems, "; ".join(problems) or detail


def _headers(api_key: str | None, session: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if session:
        headers["X-Session-ID"] = session
    return headers


def check_models(report: NodeReport, model: str, api_key: str | None, timeout: float) -> None:
    t0 = time.monotonic()
    try:
        r = requests.get(f"{report.url}/v1/models", headers=_headers(api_key), timeout=timeout)
        r.raise_for_status()
        names = [m["id"] for m in r.json().get("data", [])]
        ok = model in names
        report.add(Check("models", ok, f"serves {names}", (time.monotonic() - t0) * 1e3))
    except (requests.RequestException, ValueError, KeyError) as exc:
        report.add(Check("models", False, f"{type(exc).__name__}: {exc}"))


def check_chat(report: NodeReport, model: str, prompt: str, max_tokens: int, api_key: str | None,
               timeout: float, require_reasoning: bool) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0.6}
    t0 = time.monotonic()
    try:
        r = requests.post(f"{report.url}/v1/chat/completions", json=body, headers=_headers(api_key),
                          timeout=timeout)
        r.raise_for_status()
        data = r.json()
        choice = data["choices"][0]
        msg = choice["message"]
        ok, detail = _judge(_reasoning(msg), msg.get("content"), choice.get("finish_reason"),
                            data.get("usage"), require_reasoning)
        report.add(Check("chat", ok, detail, (time.monotonic() - t0) * 1e3))
    except (requests.RequestException, ValueError, KeyError, IndexError) as exc:
        report.add(Check("chat", False, f"{type(exc).__name__}: {exc}"))


@dataclass
class StreamResult:
    """What one streamed chat completion delivered, and when."""

    reasoning: str | None = None
    content: str = ""
    finish: str | None = None
    usage: dict | None = None
    done: bool = False  # the server sent [DONE]: the stream was not cut
    ttft_ms: float | None = None
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float | None:
        """Decode rate after the first token (None when too little was generated to tell)."""
        tokens = (self.usage or {}).get("completion_tokens") or 0
        decode_s = self.seconds - (self.ttft_ms or 0) / 1e3
        return (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else None


class EventStream:
    """The JSON chunks of an OpenAI-style server-sent event stream, up to `data: [DONE]`;
    `done` tells afterwards whether [DONE] came (else the stream was cut). Bad JSON raises
    ValueError. Shared by the smoke test and bench/h200/restart.py."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.done = False

    def __iter__(self) -> Iterator[dict]:
        for line in self.response.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                self.done = True
                return
            yield json.loads(payload)


def stream_chat(url: str, body: dict, headers: dict[str, str], timeout: float) -> StreamResult:
    """POST a streaming chat completion and read it to the end; raises requests' errors."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    result = StreamResult()
    t0 = time.monotonic()
    with requests.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=timeout,
                       stream=True) as r:
        r.raise_for_status()
        events = EventStream(r)
        for chunk in events:
            result.usage = chunk.get("usage") or result.usage
            for choice in chunk.get("choices", []):
                delta = choice.get("delta", {})
                piece = _reasoning(delta)
                if piece is not None:
                    result.reasoning = (result.reasoning or "") + piece
                result.content += delta.get("content") or ""
                result.finish = choice.get("finish_reason") or result.finish
                if result.ttft_ms is None and (piece or delta.get("content")):
                    result.ttft_ms = (time.monotonic() - t0) * 1e3
        result.done = events.done
    result.seconds = time.monotonic() - t0
    return result


def check_chat_stream(report: NodeReport, model: str, prompt: str, max_tokens: int,
                      api_key: str | None, timeout: float, require_reasoning: bool) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.6}
    try:
        got = stream_chat(report.url, body, _headers(api_key), timeout)
        ok, detail = _judge(got.reasoning, got.content, got.finish, got.usage, require_reasoning)
        if not got.done:
            ok, detail = False, "stream ended without [DONE]"
        if ok and got.ttft_ms:
            detail += f" ttft={got.ttft_ms:.0f}ms"
        report.add(Check("chat-stream", ok, detail, got.seconds * 1e3, ttft_ms=got.ttft_ms,
                         tokens_per_s=got.tokens_per_s))
    except (requests.RequestException, ValueError, KeyError) as exc:
        report.add(Check("chat-stream", False, f"{type(exc).__name__}: {exc}"))


def smoke(target: str, url: str, model: str, *, prompt: str = "What is 7 times 6?",
          max_tokens: int = 32, api_key: str | None = None, timeout: float = 120,
          require_reasoning: bool = True) -> NodeReport:
    report = NodeReport(target=target, url=url.rstrip("/"))
    check_models(report, model, api_key, timeout)
    check_chat(report, model, prompt, max_tokens, api_key, timeout, require_reasoning)
    check_chat_stream(report, model, prompt, max_tokens, api_key, timeout, require_reasoning)
    return report


def table(reports: list[NodeReport]) -> str:
    rows = [f"{'target':14} {'check':12} {'ok':4} {'ms':>7}  detail"]
    for rep in reports:
        for c in rep.checks:
            ms = f"{c.latency_ms:.0f}" if c.latency_ms is not None else "-"
            rows.append(f"{rep.target:14} {c.name:12} {'ok' if c.ok else 'FAIL':4} {ms:>7}  {c.detail}")
    failed = [r.target for r in reports if not r.ok]
    rows.append(f"{len(reports) - len(failed)}/{len(reports)} answered" +
                 (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return "\n".join(rows)


def to_json(reports: list[NodeReport]) -> str:
    return json.dumps({"ok": all(r.ok for r in reports), "targets": [asdict(r) for r in reports]}, indent=2)


class KeyFileError(Exception):
    """An --api-key-file that cannot be read."""


def read_key(path: str | None) -> str | None:
    """The key alone, or a header file r1deploy writes for curl ('Authorization: Bearer KEY')."""
    if not path:
        return None
    try:
        with open(path) as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"--api-key-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return text.removeprefix("Authorization:").strip().removeprefix("Bearer").strip() or None


def _cmd(args: argparse.Namespace) -> int:
    targets = [(t.split("=", 1) if "=" in t else (t, t)) for t in args.target]
    try:
        key = read_key(args.api_key_file)
    except KeyFileError as exc:  # nothing was tried: "could not check", not a failed target
        print(f"r1deploy smoke: {exc}", file=sys.stderr)
        return 2
    reports = [smoke(name, url, args.model, prompt=args.prompt, max_tokens=args.max_tokens,
                     api_key=key, timeout=args.timeout,
                     require_reasoning=not args.no_reasoning) for name, url in targets]
    print(to_json(reports) if args.json else table(reports))
    if args.report:
        with open(args.report, "w") as f:
            f.write(to_json(reports) + "\n")
    return 0 if all(r.ok for r in reports) else 1


def register(sub) -> None:
    p = sub.add_parser("smoke", help="real completions against nodes/gateway; exit 1 when any fails")
    p.add_argument("target", nargs="+", help="URL or NAME=URL of a node or gateway")
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--prompt", default="What is 7 times 6? Answer with a number.")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--api-key-file", help="file holding the API key (never pass a key in argv)")
    p.add_argument("--no-reasoning", action="store_true", help="the model has no reasoning parser")
    p.add_argument("--json", action="store_true")
    p.add_argument("--report", help="also write the JSON report to this file")
    p.set_defaults(func=_cmd)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m r1deploy.serving.smoke")
    register(parser.add_subparsers(dest="command", required=True))
    sys.exit(_cmd(parser.parse_args(["smoke", *sys.argv[1:]])))
