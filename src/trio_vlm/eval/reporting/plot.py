"""Accuracy against visual tokens per layer, one panel per benchmark and one line per method."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from trio_vlm.eval.reporting.table import RunResult, series


def plot_accuracy_vs_tokens(results: Sequence[RunResult], path: str | os.PathLike[str]) -> Path:
    """Draw and save the figure (format from the file suffix); vanilla is a dashed horizontal line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'trio-vlm[plot]'") from exc
    data = series(results)
    if not data:
        raise ValueError("nothing to plot: no run has both a score and a token count")
    columns = list(data)
    ncols = min(4, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False)
    for ax, column in zip(axes.flat, columns):
        for label, points in sorted(data[column].items()):
            xs, ys = zip(*points)
            if label == "Vanilla":
                ax.axhline(ys[-1], color="grey", linestyle="--", label="Vanilla")
            else:
                ax.plot(xs, ys, marker="o", label=label)
        ax.set_title(column)
        ax.set_xlabel("visual tokens per layer (avg)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize="small")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
