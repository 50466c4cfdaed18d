"""A grid of images with the visual tokens each method dropped darkened (kept tokens shown as they are)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image


def kept_grid(kept: list[int] | None, num_visual: int) -> np.ndarray:
    """(side, side) bool grid of kept patches; ``None`` means all kept."""
    side = math.isqrt(num_visual)
    if side * side != num_visual:
        raise ValueError(f"cannot lay {num_visual} visual tokens on a square patch grid")
    mask = np.zeros(num_visual, dtype=bool)
    if kept is None:
        mask[:] = True
    else:
        idx = np.asarray(kept, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= num_visual):
            raise ValueError(f"kept indices must lie in 0..{num_visual - 1}")
        mask[idx] = True
    return mask.reshape(side, side)


def overlay_panels(
    panels: list[tuple[Image.Image, str, list[int] | None]],
    num_visual: int,
    path: str | Path,
    columns: int = 4,
) -> Path:
    """Save ``(image, title, kept original indices)`` panels, ``columns`` per row, as a PNG at ``path``."""
    if not panels:
        raise ValueError("no panels to draw")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ValueError("the overlay needs matplotlib: pip install 'trio-vlm[plot]'") from exc
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (image, title, kept) in zip(axes.flat, panels):
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        height, width = pixels.shape[:2]
        mask = kept_grid(kept, num_visual)
        shade = np.zeros((*mask.shape, 4))
        shade[~mask, 3] = 0.75
        ax.imshow(pixels, extent=(0, width, height, 0))
        ax.imshow(shade, extent=(0, width, height, 0), interpolation="nearest")
        wrapped = "\n".join(textwrap.wrap(title, 38))
        ax.set_title(f"{wrapped}\n{int(mask.sum())}/{num_visual} tokens kept", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
