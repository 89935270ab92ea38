"""Plot SLO capacity searches: TTFT p99 and TPOT p99 (median of the repeats, min-max bars) per rate.

    python bench/h200/slo_plot.py bench/results/h200/slo   # -> slo/capacity.png
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(root: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in sorted(root.glob("*/*/capacity.json")):
        data = json.loads(run.read_text())
        label = f"{run.parent.parent.name}/{data['label']} ({data['capacity_req_s']:g} req/s)"
        pts = data["points"]
        for ax, key in zip(axes, ("ttft_p99_ms", "tpot_p99_ms"), strict=True):
            x = [p["rate"] for p in pts]
            y = [p[key]["median"] for p in pts]
            err = [[p[key]["median"] - p[key]["min"] for p in pts], [p[key]["max"] - p[key]["median"] for p in pts]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
    for ax, (title, slo) in zip(axes, (("TTFT p99 (ms)", 1000), ("TPOT p99 (ms)", 50)), strict=True):
        ax.axhline(slo, color="red", ls="--", lw=1)
        ax.set_xlabel("Poisson rate (req/s)")
        ax.set_title(title + ", median of 3 windows, min-max")
        ax.set_yscale("log")
    axes[1].legend(fontsize=7)
    out = root / "capacity.png"
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
