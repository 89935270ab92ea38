"""PNG plots of a release's sweep (matplotlib, headless): each point's median with its min-max range,
and the previous release beside it when there is one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def _series(summary: Mapping, metric: str) -> tuple[list[int], list[float], list[list[float]]]:
    xs, ys, err = [], [], [[], []]
    for p in summary["points"]:
        m = p["metrics"].get(metric)
        if m is None:
            continue
        xs.append(p["concurrency"])
        ys.append(m["median"])
        err[0].append(m["median"] - m["low"])
        err[1].append(m["high"] - m["median"])
    return xs, ys, err


def _panel(ax, summaries: list[Mapping], metric: str, label: str) -> None:
    drawn = False
    for i, s in enumerate(summaries):
        xs, ys, err = _series(s, metric)
        if xs:
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, linestyle="-" if i == 0 else "--",
                        label=f"{s['release']}")
            drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(label)
        return
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency")
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
    ax.legend()


def plot(summary: Mapping, out_dir: Path, previous: Mapping | None = None) -> list[Path]:
    """throughput.png and latency.png in out_dir; bars are the min-max of a point's repeats."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = [summary, *([previous] if previous else [])]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _panel(axes[0], summaries, "output_tok_s", "output tokens/s")
    _panel(axes[1], summaries, "goodput_req_s", "goodput (req/s under the SLO)")
    fig.suptitle(f"r1deploy bench {summary['release']}: throughput (bars: min-max of repeats)")
    fig.tight_layout()
    paths.append(out_dir / "throughput.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (metric, label) in zip(axes, [("p50_ttft_ms", "TTFT p50 (ms)"), ("p99_ttft_ms", "TTFT p99 (ms)"),
                                          ("p99_itl_ms", "ITL p99 (ms)")], strict=True):
        _panel(ax, summaries, metric, label)
    fig.suptitle(f"r1deploy bench {summary['release']}: latency")
    fig.tight_layout()
    paths.append(out_dir / "latency.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
