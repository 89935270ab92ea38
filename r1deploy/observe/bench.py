"""Fleet benchmark results: parse `vllm bench serve` runs, show each point's spread, compare releases.

Pure (no I/O but reading and writing result files). A point is one concurrency; every point is
run several times after the tool's own warm-up, and its median, min and max are kept, so a
JIT stall or a noisy run shows as spread instead of being averaged in (on the real H200 the
same config gave 1,250-2,416 output tok/s at concurrency 16 across runs). A release is
compared with the previous one point by point: a median beyond the threshold in the bad
direction (less throughput or goodput, more latency) is a regression.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# metric -> (key in the tool's JSON, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "output_tok_s": ("output_throughput", True),
    "req_s": ("request_throughput", True),
    "goodput_req_s": ("request_goodput", True),
    "p50_ttft_ms": ("p50_ttft_ms", False),
    "p99_ttft_ms": ("p99_ttft_ms", False),
    "p50_itl_ms": ("p50_itl_ms", False),
    "p99_itl_ms": ("p99_itl_ms", False),
    "p99_tpot_ms": ("p99_tpot_ms", False),
}
# What a regression is judged on: throughput, goodput and the tail the SLO is about.
GATED = ("output_tok_s", "goodput_req_s", "p99_ttft_ms", "p99_itl_ms")
SUMMARY_FILE = "summary.json"


class BenchError(ValueError):
    """A result file that is not a `vllm bench serve --save-result` JSON (names the file)."""


@dataclass(frozen=True)
class Run:
    """One `vllm bench serve` run at one concurrency."""

    concurrency: int
    completed: int
    failed: int
    duration_s: float
    values: dict[str, float | None]
    source: str = ""


def parse_result(data: Mapping[str, Any], source: str = "") -> Run:
    """A run from the JSON `vllm bench serve --save-result` writes."""
    try:
        concurrency = data["max_concurrency"]
        if concurrency is None:
            raise BenchError(f"{source}: run without --max-concurrency; a sweep point needs one")
        values = {name: (None if data.get(key) is None else float(data[key])) for name, (key, _) in METRICS.items()}
        return Run(int(concurrency), int(data["completed"]), int(data.get("failed") or 0),
                   float(data["duration"]), values, source)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BenchError):
            raise
        raise BenchError(f"{source}: not a vllm bench serve result ({exc!r})") from None


def read_runs(paths: Iterable[Path]) -> list[Run]:
    runs = []
    for path in sorted(paths):
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise BenchError(f"{path}: not JSON ({exc})") from None
        runs.append(parse_result(data, str(path)))
    return runs


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    n: int

    @property
    def spread_pct(self) -> float:
        """(max - min) / median: how far apart the repeats of one point landed."""
        return 100 * (self.high - self.low) / self.median if self.median else 0.0


def spread(values: Iterable[float | None]) -> Spread | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return Spread(statistics.median(vals), min(vals), max(vals), len(vals))


def summarize(runs: Iterable[Run], release: str, meta: Mapping[str, Any] | None = None) -> dict:
    """A release's results: per concurrency, every metric's median/min/max over its repeats."""
    by_c: dict[int, list[Run]] = {}
    for r in runs:
        by_c.setdefault(r.concurrency, []).append(r)
    points = []
    for c in sorted(by_c):
        group = by_c[c]
        metrics = {}
        for name in METRICS:
            s = spread(r.values[name] for r in group)
            metrics[name] = None if s is None else {**asdict(s), "spread_pct": round(s.spread_pct, 2)}
        points.append({"concurrency": c, "repeats": len(group), "failed": sum(r.failed for r in group),
                       "completed": sum(r.completed for r in group), "metrics": metrics,
                       "sources": [r.source for r in group]})
    return {"release": release, "meta": dict(meta or {}), "points": points}


def _median(point: Mapping, metric: str) -> float | None:
    m = point["metrics"].get(metric)
    return None if m is None else m["median"]


@dataclass(frozen=True)
class Delta:
    concurrency: int
    metric: str
    previous: float
    current: float
    change_pct: float  # signed: + is better
    regression: bool


def compare(current: Mapping, previous: Mapping, threshold_pct: float) -> list[Delta]:
    """Point-by-point change of the gated metrics between two summaries (concurrencies in both)."""
    prev = {p["concurrency"]: p for p in previous["points"]}
    deltas = []
    for point in current["points"]:
        old = prev.get(point["concurrency"])
        if old is None:
            continue
        for metric in GATED:
            a, b = _median(old, metric), _median(point, metric)
            if a is None or b is None or a == 0:
                continue
            better = (b - a) / a * 100 * (1 if METRICS[metric][1] else -1)
            deltas.append(Delta(point["concurrency"], metric, a, b, round(better, 2), better < -threshold_pct))
    return deltas


def _cell(point: Mapping, metric: str, width: int) -> str:
    v = _median(point, metric)
    return f"{'n/a' if v is None else f'{v:,.1f}':>{width}}"


def table(summary: Mapping) -> str:
    """The sweep as text: median [min-max] per point, so a noisy point is visible at a glance."""
    rows = [f"release {summary['release']}",
            f"{'conc':>5} {'runs':>4} {'output tok/s [min-max] spread':>30} {'p50 TTFT ms':>12} {'p99 TTFT ms':>12} "
            f"{'p99 ITL ms':>11} {'goodput req/s':>13}"]
    for p in summary["points"]:
        out = p["metrics"]["output_tok_s"]
        spread_txt = f"{out['median']:,.0f} [{out['low']:,.0f}-{out['high']:,.0f}] {out['spread_pct']:.0f}%"
        rows.append(f"{p['concurrency']:>5} {p['repeats']:>4} {spread_txt:>30} {_cell(p, 'p50_ttft_ms', 12)} "
                    f"{_cell(p, 'p99_ttft_ms', 12)} {_cell(p, 'p99_itl_ms', 11)} {_cell(p, 'goodput_req_s', 13)}")
    return "\n".join(rows)


def comparison_table(deltas: list[Delta], previous: str, current: str, threshold_pct: float) -> str:
    rows = [f"{current} vs {previous} (regression: worse by more than {threshold_pct:g} %)",
            f"{'conc':>5} {'metric':14} {'previous':>12} {'current':>12} {'change':>8}"]
    for d in deltas:
        flag = "  REGRESSION" if d.regression else ""
        rows.append(f"{d.concurrency:>5} {d.metric:14} {d.previous:>12,.1f} {d.current:>12,.1f} "
                    f"{d.change_pct:>+7.1f}%{flag}")
    rows.append(f"{sum(d.regression for d in deltas)} regression(s)")
    return "\n".join(rows)


def peak_output_tok_s(summary: Mapping, meets_slo: bool = True, slo_ttft_p99_ms: float | None = None) -> float | None:
    """The best median output tok/s of a sweep; with an SLO, only among points whose p99 TTFT meets it."""
    best = None
    for p in summary["points"]:
        tput, ttft = _median(p, "output_tok_s"), _median(p, "p99_ttft_ms")
        if tput is None or (meets_slo and slo_ttft_p99_ms and (ttft is None or ttft > slo_ttft_p99_ms)):
            continue
        best = tput if best is None else max(best, tput)
    return best


def measured_tokens_per_day(summary: Mapping, slo_ttft_p99_ms: float | None) -> float | None:
    """What the fleet really serves a day: its best output tok/s within the SLO, around the clock."""
    peak = peak_output_tok_s(summary, slo_ttft_p99_ms=slo_ttft_p99_ms)
    return None if peak is None else peak * 86400


def write_summary(directory: Path, summary: Mapping) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def read_summary(directory: Path) -> dict:
    return json.loads((Path(directory) / SUMMARY_FILE).read_text())


def previous_release(root: Path, current: str) -> str | None:
    """The newest other release under reports/bench/ with a summary (by the summary's mtime)."""
    found = [p.parent for p in Path(root).glob(f"*/{SUMMARY_FILE}") if p.parent.name != current]
    return max(found, key=lambda d: (d / SUMMARY_FILE).stat().st_mtime).name if found else None
