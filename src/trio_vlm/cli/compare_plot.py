"""Side-by-side figure of the image each method saw, with the patches it dropped darkened."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def model_view(
    pixel_values: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> np.ndarray:
    """(H, W, 3) floats in [0, 1]: one image's ``pixel_values`` (3, H, W) with the processor's normalisation
    undone (min-max scaled when the processor gives no mean/std)."""
    x = pixel_values.detach().float().cpu()
    if mean is not None and std is not None:
        x = x * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    else:
        x = (x - x.min()) / (x.max() - x.min()).clamp(min=1e-6)
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def kept_mask(kept: torch.Tensor | None, num_visual: int) -> np.ndarray:
    """(side, side) bool grid of the kept patches (``None``: all kept); the grid must be square."""
    side = math.isqrt(num_visual)
    if side * side != num_visual:
        raise ValueError(f"cannot draw {num_visual} visual tokens on a square patch grid")
    mask = np.zeros(num_visual, dtype=bool)
    if kept is None:
        mask[:] = True
    else:
        idx = kept.cpu().numpy()
        mask[idx[idx < num_visual]] = True
    return mask.reshape(side, side)


def plot_kept_tokens(
    image: np.ndarray,
    panels: Sequence[tuple[str, torch.Tensor | None]],
    num_visual: int,
    path: str | os.PathLike[str],
    columns: int = 5,
) -> Path:
    """Save one panel per ``(title, kept original indices)`` over ``image`` to ``path``; return the path."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValueError("--plot needs matplotlib: pip install 'trio-vlm[plot]'") from exc
    if not panels:
        raise ValueError("nothing to plot: no method produced a result")
    cols = min(columns, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.0 * cols, 3.3 * rows))
    FigureCanvasAgg(fig)
    height, width = image.shape[:2]
    for i, (title, kept) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        mask = kept_mask(kept, num_visual)
        shade = np.zeros((*mask.shape, 4))
        shade[~mask, 3] = 0.7  # dropped patches: black at 70 % opacity
        ax.imshow(image, extent=(0, width, height, 0))
        ax.imshow(shade, extent=(0, width, height, 0), interpolation="nearest")
        ax.set_title(f"{title}\n{int(mask.sum())}/{num_visual} kept", fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
