"""Open-loop Poisson load on an OpenAI-compatible /v1/completions (one node or the gateway), streamed,
measuring each request's TTFT and TPOT. Standard library only (asyncio), so it runs on a controller,
a node or the GPU test host as it is.

One point = one continuous Poisson stream at one rate: a lead-in (not counted: the queue fills from
empty), then ``repeats`` windows of ``window_s`` seconds back to back; each request belongs to the
window it arrived in, and each window is one repeat (its own p99s). Back-to-back windows measure
the steady state the rate makes, without the drain and restart between separate runs.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from r1deploy.observe.capacity import RepeatResult, SloTarget
from r1deploy.observe.workload import Request, Workload


@dataclass
class Sample:
    arrival: float  # seconds since the stream started
    ttft_ms: float | None = None
    e2e_ms: float | None = None
    tokens: int = 0
    error: str = ""

    @property
    def tpot_ms(self) -> float | None:
        if self.ttft_ms is None or self.e2e_ms is None or self.tokens < 2:
            return None
        return (self.e2e_ms - self.ttft_ms) / (self.tokens - 1)


async def _read_chunked(reader: asyncio.StreamReader):
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return
        data = await reader.readexactly(size)
        await reader.readexactly(2)
        yield data


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]):
    if headers.get("transfer-encoding", "").lower() == "chunked":
        async for data in _read_chunked(reader):
            yield data
        return
    while data := await reader.read(65536):
        yield data


async def send(url: str, model: str, req: Request, sample: Sample, t0: float, headers: dict[str, str],
               ctx: ssl.SSLContext | None, timeout_s: float) -> None:
    parts = urlsplit(url)
    body = json.dumps({"model": model, "prompt": req.prompt, "max_tokens": req.max_tokens, "stream": True,
                       "ignore_eos": True, "temperature": 0.6, "top_p": 0.95,
                       "stream_options": {"include_usage": True}}).encode()
    extra = {**headers, **({"X-Session-Id": req.session} if req.session else {})}
    head = (f"POST {parts.path.rstrip('/')}/v1/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in extra.items()) + "\r\n").encode()
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            port = parts.port or (443 if parts.scheme == "https" else 80)
            reader, writer = await asyncio.open_connection(parts.hostname, port,
                                                           ssl=ctx if parts.scheme == "https" else None)
            writer.write(head + body)
            await writer.drain()
            status = (await reader.readline()).decode().split()
            resp_headers = {}
            while (line := (await reader.readline()).decode().strip()):
                k, _, v = line.partition(":")
                resp_headers[k.strip().lower()] = v.strip()
            if len(status) < 2 or status[1] != "200":
                sample.error = f"HTTP {' '.join(status[1:])}"
                writer.close()
                return
            await _consume(reader, resp_headers, sample, start)
            writer.close()
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        sample.error = f"{type(exc).__name__}: {exc}"[:200]


async def _consume(reader: asyncio.StreamReader, headers: dict[str, str], sample: Sample, start: float) -> None:
    buf, chunks = b"", 0
    async for data in _body(reader, headers):
        buf += data
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            payload = event.strip().removeprefix(b"data:").strip()
            if not payload or payload == b"[DONE]":
                continue
            msg = json.loads(payload)
            if msg.get("choices"):
                chunks += 1
                if sample.ttft_ms is None:
                    sample.ttft_ms = (time.monotonic() - start) * 1000
            if msg.get("usage"):
                sample.tokens = int(msg["usage"].get("completion_tokens") or 0)
    sample.e2e_ms = (time.monotonic() - start) * 1000
    sample.tokens = sample.tokens or chunks


async def stream(url: str, model: str, requests: list[Request], rate: float, seed: int,
                 headers: dict[str, str] | None = None, ca_file: str | None = None,
                 timeout_s: float = 600, stop_s: float = float("inf")) -> list[Sample]:
    """Send ``requests`` at Poisson arrivals of ``rate`` per second until ``stop_s``; every sample,
    in arrival order."""
    rng = random.Random(seed)
    ctx = ssl.create_default_context(cafile=ca_file) if url.startswith("https") else None
    t0 = time.monotonic()
    tasks, samples, at = [], [], 0.0
    for req in requests:
        at += rng.expovariate(rate)
        if at >= stop_s:
            break
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        sample = Sample(arrival=time.monotonic() - t0)
        samples.append(sample)
        tasks.append(asyncio.create_task(send(url, model, req, sample, t0, headers or {}, ctx, timeout_s)))
    await asyncio.gather(*tasks)
    return samples


def run_stream(url: str, model: str, requests: list[Request], rate: float, seed: int,
               headers: dict[str, str] | None = None, ca_file: str | None = None,
               stop_s: float = float("inf"), timeout_s: float = 600) -> list[Sample]:
    """``stream`` in a process of its own: the caller may run an event loop already or have threads
    patched (pyinfra imports gevent), and the sender's timing should not share a GIL with it."""
    job = {"url": url, "model": model, "rate": rate, "seed": seed, "headers": headers or {}, "ca_file": ca_file,
           "stop_s": stop_s if stop_s != float("inf") else None, "timeout_s": timeout_s,
           "requests": [asdict(r) for r in requests]}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(job, f)
        f.flush()
        done = subprocess.run([sys.executable, "-m", "r1deploy.observe.loadgen", f.name], capture_output=True,
                              text=True, timeout=(stop_s if stop_s != float("inf") else 0) + timeout_s + 60)
    if done.returncode:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return [Sample(**x) for x in json.loads(done.stdout)]


def _main(path: str) -> None:
    with open(path) as f:
        job = json.load(f)
    reqs = [Request(**r) for r in job["requests"]]
    samples = asyncio.run(stream(job["url"], job["model"], reqs, job["rate"], job["seed"], job["headers"],
                                 job["ca_file"], job["timeout_s"], job["stop_s"] or float("inf")))
    print(json.dumps([asdict(s) for s in samples]))


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("inf")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def window_result(samples: list[Sample], rate: float, window_s: float, slo: SloTarget) -> RepeatResult:
    done = [s for s in samples if not s.error and s.ttft_ms is not None]
    ttft = [s.ttft_ms for s in done]
    tpot = [s.tpot_ms for s in done if s.tpot_ms is not None]
    good = [s for s in done if s.ttft_ms <= slo.ttft_p99_ms and (s.tpot_ms or 0) <= slo.tpot_p99_ms]
    return RepeatResult(rate=rate, requests=len(samples), failed=len(samples) - len(done),
                        ttft_p50_ms=round(_pct(ttft, 50), 2), ttft_p99_ms=round(_pct(ttft, 99), 2),
                        tpot_p50_ms=round(_pct(tpot, 50), 2), tpot_p99_ms=round(_pct(tpot, 99), 2),
                        output_tok_s=round(sum(s.tokens for s in done) / window_s, 1),
                        goodput_req_s=round(len(good) / window_s, 3))


def split_windows(samples: list[Sample], rate: float, lead_s: float, window_s: float, repeats: int,
                  slo: SloTarget) -> list[RepeatResult]:
    out = []
    for i in range(repeats):
        lo, hi = lead_s + i * window_s, lead_s + (i + 1) * window_s
        out.append(window_result([s for s in samples if lo <= s.arrival < hi], rate, window_s, slo))
    return out


def arrivals_needed(rate: float, repeats: int, window_s: float, lead_s: float) -> int:
    """Requests enough for a Poisson stream of ``rate`` to cover the lead-in and every window."""
    return int(rate * (lead_s + repeats * window_s) * 1.25) + 8


def measure_point(url: str, model: str, workload: Workload, rate: float, *, repeats: int = 3,
                  window_s: float = 15.0, lead_s: float = 5.0, seed: int = 0, slo: SloTarget | None = None,
                  headers: dict[str, str] | None = None, ca_file: str | None = None) -> list[RepeatResult]:
    """One point: a stream long enough for the lead-in and every window, cut into repeats."""
    n = arrivals_needed(rate, repeats, window_s, lead_s)
    last = lead_s + repeats * window_s
    samples = run_stream(url, model, workload.take(n), rate, seed, headers, ca_file, stop_s=last)
    return split_windows(samples, rate, lead_s, window_s, repeats, slo or SloTarget())


if __name__ == "__main__":
    _main(sys.argv[1])
