"""TRIO's encoder stage (TRIO.md §5): window-local + global [CLS]-attention selection and nearest merging."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def window_global_select(
    shallow: torch.Tensor,
    deep: torch.Tensor,
    budget: int,
    window: int = 6,
    local_ratio: float = 0.5,
) -> torch.Tensor:
    """Indices (ascending) chosen from a square patch grid.

    ``int(budget·local_ratio) // n_windows`` patches per non-overlapping ``window``×``window`` window by the
    ``shallow`` attention map, then ``budget - int(budget·local_ratio)`` more by the ``deep`` map among the rest
    (the reference's arithmetic: when the local half is not a multiple of the window count, fewer than
    ``budget`` tokens are kept).
    """
    n = shallow.numel()
    side = int(round(n**0.5))
    if side * side != n:
        raise ValueError(f"encoder stage needs a square patch grid, got {n} patches")
    if side % window:
        raise ValueError(f"patch grid side {side} is not divisible by the window size {window}")
    if budget >= n:
        return torch.arange(n, device=shallow.device)
    per_side = side // window
    local_total = int(budget * local_ratio)
    per_window = local_total // (per_side * per_side)
    grid = (
        shallow.view(per_side, window, per_side, window).permute(0, 2, 1, 3).reshape(per_side * per_side, -1)
    )
    local = torch.empty(0, dtype=torch.long, device=shallow.device)
    if per_window > 0:
        top = grid.topk(per_window, dim=1).indices  # (windows, per_window) within-window raster index
        wy, wx = torch.div(top, window, rounding_mode="floor"), top % window
        win = torch.arange(per_side * per_side, device=shallow.device)[:, None]
        rows = torch.div(win, per_side, rounding_mode="floor") * window + wy
        cols = (win % per_side) * window + wx
        local = (rows * side + cols).flatten()
    masked = deep.float().clone()
    masked[local] = float("-inf")
    global_idx = masked.topk(budget - local_total).indices
    return torch.sort(torch.cat([local, global_idx])).values


def merge_into_nearest(features: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Average every dropped token into its most cosine-similar kept token: (kept + Σ merged) / (1 + count).

    ``features`` (N, D), ``kept`` ascending indices; returns the (len(kept), D) merged features.
    """
    keep_mask = torch.zeros(features.shape[0], dtype=torch.bool, device=features.device)
    keep_mask[kept] = True
    retained, dropped = features[keep_mask], features[~keep_mask]
    if dropped.shape[0] == 0:
        return retained
    # cosine similarity as one (dropped × kept) matrix product — no (dropped, kept, D) intermediate
    sim = F.normalize(dropped.float(), dim=-1) @ F.normalize(retained.float(), dim=-1).T
    nearest = sim.argmax(dim=1)
    sums = retained.clone().index_add_(0, nearest, dropped)
    counts = torch.ones(retained.shape[0], device=features.device, dtype=features.dtype)
    counts = counts.index_add_(0, nearest, torch.ones_like(nearest, dtype=features.dtype))
    return sums / counts[:, None]
