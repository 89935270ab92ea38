"""A bounded load loop through the gateway with the OpenAI Python client: what users would see.

Mixed traffic at a fixed rate: streamed and plain chat completions, completions, and some long
streams, each with a session header (the router's sticky key). Every request is counted: ok,
failed (an HTTP error or a broken connection) or truncated (a stream that ended without its
finish reason). Bounded in count and time, and it stops by itself; lab addresses only.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import openai


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    truncated: int = 0
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def summary(self) -> str:
        top = ", ".join(f"{k} x{v}" for k, v in self.errors.most_common(5))
        return (f"{self.sent} requests in {self.seconds:.0f}s: {self.ok} ok, {self.failed} failed, "
                f"{self.truncated} truncated" + (f" ({top})" if top else ""))


class LoadLoop:
    """Start it, run the change, stop it; `result` says what the users saw meanwhile."""

    def __init__(self, base_url: str, model: str, rate: float = 4.0, max_requests: int = 4000,
                 max_seconds: float = 1500, api_key: str = "none", sessions: int = 8, **client_kwargs):
        self.client = openai.OpenAI(base_url=f"{base_url.rstrip('/')}/v1", api_key=api_key, max_retries=0,
                                    timeout=120, **client_kwargs)
        self.model, self.rate = model, rate
        self.max_requests, self.max_seconds, self.sessions = max_requests, max_seconds, sessions
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _count(self, outcome: str, error: str = "") -> None:
        with self._lock:
            setattr(self.result, outcome, getattr(self.result, outcome) + 1)
            if error:
                self.result.errors[error[:120]] += 1

    def _one(self, i: int) -> None:
        session = {"X-Session-ID": f"user-{i % self.sessions}"}
        kind = ("stream", "chat", "stream", "completion", "long-stream")[i % 5]
        messages = [{"role": "user", "content": f"Request {i}: what is {i % 97} times 3?"}]
        try:
            if kind == "chat":
                r = self.client.chat.completions.create(model=self.model, messages=messages, max_tokens=16,
                                                        extra_headers=session)
                ok = bool(r.choices) and r.usage.completion_tokens > 0
                self._count("ok" if ok else "failed", "" if ok else "empty reply")
            elif kind == "completion":
                r = self.client.completions.create(model=self.model, prompt=messages[0]["content"], max_tokens=16,
                                                   extra_headers=session)
                self._count("ok" if r.choices else "failed", "" if r.choices else "empty reply")
            else:
                finish = None
                stream = self.client.chat.completions.create(
                    model=self.model, messages=messages, stream=True, extra_headers=session,
                    # Long streams are what a restart would cut; the lab's 2 cores bound their length.
                    max_tokens=96 if kind == "long-stream" else 24, temperature=0.6, top_p=0.95)
                for chunk in stream:
                    for choice in chunk.choices:
                        finish = choice.finish_reason or finish
                self._count("ok" if finish else "truncated", "" if finish else "stream without finish_reason")
        except openai.APIStatusError as exc:
            self._count("failed", f"HTTP {exc.status_code}: {str(exc)[:80]}")
        except (openai.APIError, OSError) as exc:
            self._count("failed", f"{type(exc).__name__}: {str(exc)[:80]}")

    def _run(self) -> None:
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=32) as pool:
            i = 0
            while not self._stop.is_set() and i < self.max_requests and time.monotonic() - t0 < self.max_seconds:
                pool.submit(self._one, i)
                with self._lock:
                    self.result.sent += 1
                i += 1
                # A little jitter so requests do not arrive in lock step with the rollout's polls.
                self._stop.wait(random.uniform(0.5, 1.5) / self.rate)
        self.result.seconds = time.monotonic() - t0

    def start(self) -> LoadLoop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=300)
        return self.result

    def __enter__(self) -> LoadLoop:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
