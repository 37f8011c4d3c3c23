"""Draw ``benchmarks.compare``'s JSON as a PNG: ``python chart.py RESULTS.json OUT.png``.

Runs in the harness's venv (matplotlib is not a dependency of Hoist), reading the JSON alone.
One panel per row (a workload from one source): each contender's median wall time as a bar,
its min–max as a whisker, Hoist's bar in a colour of its own.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    result = json.loads(source.read_text())
    rows = [row for row in result["rows"] if row["summary"]]
    columns = 2 if len(rows) > 1 else 1
    lines = math.ceil(len(rows) / columns)
    figure, axes = plt.subplots(
        lines, columns, figsize=(7 * columns, 0.45 * 9 * lines + 1), squeeze=False
    )
    for ax, row in zip(axes.flat, rows, strict=False):
        draw_row(ax, row)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    figure.suptitle(
        f"Cold push, median of {result['settings']['runs']} runs "
        f"({result['started'][:10]}, {result['machine']['cpus']} CPUs; indicative)"
    )
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    figure.savefig(target, dpi=110)


def draw_row(ax: plt.Axes, row: dict[str, Any]) -> None:
    summary = row["summary"]
    labels = [s["label"] for s in summary]
    medians = [s["median_seconds"] for s in summary]
    low = [s["median_seconds"] - s["min_seconds"] for s in summary]
    high = [s["max_seconds"] - s["median_seconds"] for s in summary]
    colours = ["tab:orange" if s["contender"] == row["hoist"] else "tab:blue" for s in summary]
    positions = range(len(summary))
    ax.barh(positions, medians, xerr=[low, high], color=colours, capsize=3)
    ax.set_yticks(list(positions), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (lower is better)")
    ax.set_title(row["title"], fontsize=9)
    for y, value in zip(positions, medians, strict=True):
        ax.text(value, y, f" {value:.2f}", va="center", fontsize=7)


if __name__ == "__main__":
    main()
