"""``trio-vlm compare --plot``: the image each method saw, with the patches it dropped darkened."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from trio_vlm.overlay import save_overlay


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


def plot_kept_tokens(
    image: np.ndarray,
    panels: Sequence[tuple[str, torch.Tensor | None]],
    num_visual: int,
    path: str | os.PathLike[str],
    columns: int = 5,
) -> Path:
    """Save one panel per ``(title, kept original indices)`` over ``image`` to ``path``; return the path."""
    if not panels:
        raise ValueError("nothing to plot: no method produced a result")
    return save_overlay(
        [(image, title, kept) for title, kept in panels], num_visual, path, columns, ignore_beyond=True
    )
