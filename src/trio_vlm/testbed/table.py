"""Render the testbed grid as a Markdown table and as an accuracy-vs-budget plot."""

from __future__ import annotations

import math
from pathlib import Path

from trio_vlm.testbed.grid import Row
from trio_vlm.testbed.questions import KINDS

FULL_TOKENS = 576


def markdown_table(vanilla: Row, rows: list[Row]) -> str:
    """Rows = method × budget; columns = question kinds, overall accuracy, Average % of vanilla and the % of
    the asked objects' patches kept by the first drop / that reached the last layer."""
    kinds = [k for k in KINDS if k in vanilla.by_kind]
    header = ["budget", "method", *kinds, "overall", "Average", "evidence kept (1st drop / last)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def fmt(row: Row, budget: str) -> str:
        if row.error is not None:
            cells = ["n/a"] * (len(kinds) + 3)
        else:
            cells = [f"{row.by_kind.get(k, math.nan):.1f}" for k in kinds]
            cells += [
                f"{row.accuracy:.1f}",
                f"{row.relative(vanilla):.1f}%",
                f"{row.evidence:.1f} / {row.evidence_last:.1f}",
            ]
        return "| " + " | ".join([budget, row.label, *cells]) + " |"

    lines.append(fmt(vanilla, f"{FULL_TOKENS} (all)"))
    lines += [fmt(row, str(row.budget)) for row in rows]
    return "\n".join(lines)


def plot_accuracy(vanilla: Row, rows: list[Row], path: str | Path) -> Path:
    """Overall accuracy vs. budget, one line per method variant, vanilla as a dashed line; PNG at ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ValueError("plotting needs matplotlib: pip install 'trio-vlm[plot]'") from exc
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, label in enumerate(dict.fromkeys(r.label for r in rows)):
        points = sorted((r.budget, r.accuracy) for r in rows if r.label == label and r.error is None)
        if points:
            xs, ys = zip(*points)
            style = ("-", "o") if i < 10 else ("--", "s")  # the colour cycle repeats after ten lines
            ax.plot(xs, ys, linestyle=style[0], marker=style[1], label=label)
    ax.axhline(vanilla.accuracy, color="black", linestyle="--", label=f"vanilla ({FULL_TOKENS})")
    ax.set_xlabel("average visual tokens per layer")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("trio-vlm testbed: accuracy vs. visual-token budget")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
