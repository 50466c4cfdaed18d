"""Kept-token overlays: images with the visual tokens a method dropped darkened (kept tokens as they are)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

Indices = Sequence[int] | torch.Tensor | None


def kept_grid(kept: Indices, num_visual: int, ignore_beyond: bool = False) -> np.ndarray:
    """(side, side) bool grid of the kept patches (``None``: all kept); the grid must be square.

    ``ignore_beyond``: indices ≥ ``num_visual`` (LLaVA-NeXT tile tokens past the base image, tokens a stage
    created such as VisionZip's [CLS] or SparseVLM's clusters) are left out instead of refused.
    """
    side = math.isqrt(num_visual)
    if side * side != num_visual:
        raise ValueError(f"cannot lay {num_visual} visual tokens on a square patch grid")
    mask = np.zeros(num_visual, dtype=bool)
    if kept is None:
        mask[:] = True
        return mask.reshape(side, side)
    idx = kept.cpu().numpy() if isinstance(kept, torch.Tensor) else np.asarray(kept, dtype=np.int64)
    if ignore_beyond:
        idx = idx[idx < num_visual]
    if idx.size and (idx.min() < 0 or idx.max() >= num_visual):
        raise ValueError(f"kept indices must lie in 0..{num_visual - 1}")
    mask[idx] = True
    return mask.reshape(side, side)


def save_overlay(
    panels: Sequence[tuple[Image.Image | np.ndarray, str, Indices]],
    num_visual: int,
    path: str | Path,
    columns: int = 4,
    ignore_beyond: bool = False,
) -> Path:
    """Save ``(image, title, kept original indices)`` panels, ``columns`` per row, as a PNG at ``path``.

    ``image``: a PIL image or (H, W, 3) floats in [0, 1]. Each title gets the number of tokens kept.
    """
    if not panels:
        raise ValueError("no panels to draw")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValueError("the overlay needs matplotlib: pip install 'trio-vlm[plot]'") from exc
    cols = min(columns, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.2 * cols, 3.7 * rows))
    FigureCanvasAgg(fig)
    for i, (image, title, kept) in enumerate(panels):
        pixels = image if isinstance(image, np.ndarray) else np.asarray(image.convert("RGB")) / 255.0
        height, width = pixels.shape[:2]
        mask = kept_grid(kept, num_visual, ignore_beyond)
        shade = np.zeros((*mask.shape, 4))
        shade[~mask, 3] = 0.72  # dropped patches: black at 72 % opacity
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(pixels, extent=(0, width, height, 0))
        ax.imshow(shade, extent=(0, width, height, 0), interpolation="nearest")
        wrapped = "\n".join(textwrap.wrap(title, 38))
        ax.set_title(f"{wrapped}\n{int(mask.sum())}/{num_visual} tokens kept", fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
