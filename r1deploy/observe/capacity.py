"""SLO capacity: the highest Poisson request rate at which TTFT p99 and TPOT p99 stay within the SLO,
found by a bounded search. Pure: the measurement is a function handed in (loadgen.measure_point on
a server, recorded results in tests).

Search: from a start rate, grow by ``growth`` (2: double) while points pass (shrink by it while they
fail) until one pass and one fail bracket the capacity, then bisect (geometric mean) until the bracket is within ``tolerance``
or ``max_points`` points ran. A point is several repeats at one rate; it passes when the median
repeat's p99s are within the SLO and no request failed (one noisy repeat neither makes nor breaks
it; the spread is reported beside it).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class RepeatResult:
    """One repeat at one rate: percentiles over its requests."""

    rate: float
    requests: int
    failed: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    tpot_p50_ms: float
    tpot_p99_ms: float
    output_tok_s: float = 0.0
    goodput_req_s: float = 0.0  # requests per second that met both SLOs


@dataclass
class Point:
    rate: float
    repeats: list[RepeatResult]
    passed: bool = False

    def median(self, key: str) -> float:
        return statistics.median(getattr(r, key) for r in self.repeats)

    def spread(self, key: str) -> tuple[float, float]:
        values = [getattr(r, key) for r in self.repeats]
        return min(values), max(values)


@dataclass(frozen=True)
class SloTarget:
    ttft_p99_ms: float = 1000.0
    tpot_p99_ms: float = 50.0


def judge(repeats: list[RepeatResult], slo: SloTarget) -> bool:
    if not repeats or any(r.failed for r in repeats):
        return False
    return (statistics.median(r.ttft_p99_ms for r in repeats) <= slo.ttft_p99_ms
            and statistics.median(r.tpot_p99_ms for r in repeats) <= slo.tpot_p99_ms)


@dataclass
class Search:
    start: float
    slo: SloTarget = field(default_factory=SloTarget)
    max_points: int = 6
    tolerance: float = 0.1  # stop when fail/pass - 1 is within this
    min_rate: float = 0.05
    max_rate: float = 1000.0
    points: list[Point] = field(default_factory=list)
    # 2 doubles from a guess; ~1.1 steps in fine strides from a good prior (a capacity measured before)
    growth: float = 2.0

    def bracket(self) -> tuple[float | None, float | None]:
        fails = [p.rate for p in self.points if not p.passed]
        low_fail = min(fails) if fails else None
        passes = [p.rate for p in self.points if p.passed and (low_fail is None or p.rate < low_fail)]
        return (max(passes) if passes else None), low_fail

    def next_rate(self) -> float | None:
        if len(self.points) >= self.max_points:
            return None
        if not self.points:
            return self.start
        lo, hi = self.bracket()
        if hi is None:
            nxt = round(lo * self.growth, 3)
            return nxt if nxt <= self.max_rate else None
        if lo is None:
            nxt = round(hi / self.growth, 3)
            return nxt if nxt >= self.min_rate else None
        if hi / lo - 1 <= self.tolerance:
            return None
        return round(math.sqrt(lo * hi), 3)

    def capacity(self) -> float:
        """The highest passing rate below the lowest failing one (0 when none passed)."""
        return self.bracket()[0] or 0.0

    def add(self, rate: float, repeats: list[RepeatResult]) -> Point:
        point = Point(rate, repeats, judge(repeats, self.slo))
        self.points.append(point)
        return point


def search(measure: Callable[[float], list[RepeatResult]], start: float, slo: SloTarget | None = None,
           max_points: int = 6, tolerance: float = 0.1, on_point: Callable[[Point], None] | None = None,
           growth: float = 2.0) -> Search:
    s = Search(start, slo or SloTarget(), max_points, tolerance, growth=growth)
    while (rate := s.next_rate()) is not None:
        point = s.add(rate, measure(rate))
        if on_point:
            on_point(point)
    return s


def summary(s: Search, label: str = "") -> dict:
    """JSON-ready: capacity, the bracket, and every point with its median and spread."""
    lo, hi = s.bracket()
    points = []
    for p in sorted(s.points, key=lambda p: p.rate):
        row = {"rate": p.rate, "passed": p.passed, "repeats": len(p.repeats),
               "failed": sum(r.failed for r in p.repeats)}
        for key in ("ttft_p99_ms", "tpot_p99_ms", "ttft_p50_ms", "tpot_p50_ms", "output_tok_s", "goodput_req_s"):
            lo_v, hi_v = p.spread(key)
            row[key] = {"median": round(p.median(key), 2), "min": round(lo_v, 2), "max": round(hi_v, 2)}
        row["runs"] = [asdict(r) for r in p.repeats]
        points.append(row)
    return {"label": label, "capacity_req_s": s.capacity(), "bracket": [lo, hi],
            "slo": asdict(s.slo), "max_points": s.max_points, "points": points}


def ratio(candidate: dict, baseline: dict) -> dict:
    """Capacity ratio with its spread: the bracket bounds what each capacity can be."""
    c, b = candidate["capacity_req_s"], baseline["capacity_req_s"]
    c_hi = candidate["bracket"][1] or c
    b_hi = baseline["bracket"][1] or b
    return {"ratio": round(c / b, 2) if b else None,
            "low": round(c / b_hi, 2) if b_hi else None,  # baseline at the top of its bracket
            "high": round(c_hi / b, 2) if b else None}
