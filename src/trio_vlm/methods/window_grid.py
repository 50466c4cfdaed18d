"""TRIO's encoder-stage local/global split on any patch grid (TRIO.md §5), from per-token grid coordinates.

Two local rules, one per reference:

* ``"quota"`` (LLaVA): every ``window``×``window`` window takes its top ``int(budget·local_ratio) // windows``
  tokens by the shallow map — :func:`~trio_vlm.methods.window_global.window_global_select` on a square grid,
  generalised to rectangles, cut tiles (LLaVA-NeXT) and frames;
* ``"capped"`` (Qwen2.5-VL): visit tokens by descending shallow score and take one while its window holds
  fewer than ``ceil(local / windows)``, until ``local`` are taken; edge rows/columns that do not fill a
  window join the last window of their row/column, as in the reference ``window_selection``.

Then the global half: the top of the deep map among the tokens not taken, ``budget - int(budget·local_ratio)``.
"""

from __future__ import annotations

import torch

RULES = ("quota", "capped")


def _rank_in_window(window: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """For tokens visited in ``order``, how many tokens of the same window were visited before (per token)."""
    n = order.numel()
    visit = torch.empty_like(order)
    visit[order] = torch.arange(n, device=order.device)
    grouped = torch.argsort(window * n + visit)  # by window, then by visiting order
    first = torch.ones(n, dtype=torch.bool, device=order.device)
    first[1:] = window[grouped[1:]] != window[grouped[:-1]]
    start = torch.cummax(torch.where(first, torch.arange(n, device=order.device), 0), 0).values
    rank = torch.empty_like(order)
    rank[grouped] = torch.arange(n, device=order.device) - start
    return rank


def window_ids(
    row: torch.Tensor, col: torch.Tensor, tile: torch.Tensor | None, window: int, clamp_edges: bool
) -> tuple[torch.Tensor, int]:
    """(window id per token, windows per tile). ``clamp_edges``: rows/columns past the last full window join
    it (Qwen reference); else partial windows at the edges are windows of their own (LLaVA)."""
    height, width = int(row.max()) + 1, int(col.max()) + 1
    if clamp_edges:
        n_h, n_w = max(1, height // window), max(1, width // window)
        wy = torch.clamp(torch.div(row, window, rounding_mode="floor"), max=n_h - 1)
        wx = torch.clamp(torch.div(col, window, rounding_mode="floor"), max=n_w - 1)
    else:
        n_h, n_w = -(-height // window), -(-width // window)
        wy, wx = torch.div(row, window, rounding_mode="floor"), torch.div(col, window, rounding_mode="floor")
    ids = wy * n_w + wx
    if tile is not None:
        ids = ids + (tile - tile.min()) * n_h * n_w
    return ids, n_h * n_w


def grid_window_global_select(
    shallow: torch.Tensor,
    deep: torch.Tensor,
    row: torch.Tensor,
    col: torch.Tensor,
    budget: int,
    window: int,
    local_ratio: float = 0.5,
    tile: torch.Tensor | None = None,
    rule: str = "quota",
) -> torch.Tensor:
    """Ascending local indices of the ``budget`` tokens kept (fewer under the quota rule's arithmetic, as in
    the LLaVA reference) from a grid given by each token's ``row``/``col`` (and ``tile``)."""
    if rule not in RULES:
        raise ValueError(f"window rule must be one of {RULES}, got {rule!r}")
    n = shallow.numel()
    if budget >= n:
        return torch.arange(n, device=shallow.device)
    ids, _ = window_ids(row, col, tile, window, clamp_edges=rule == "capped")
    present = torch.unique(ids)
    local_total = int(budget * local_ratio)
    order = torch.argsort(shallow.float(), descending=True, stable=True)
    rank = _rank_in_window(ids, order)
    if rule == "quota":
        taken = rank < local_total // present.numel()
    else:
        limit = -(-local_total // present.numel())
        accepted = order[(rank < limit)[order]]  # accepted tokens in visiting order
        taken = torch.zeros(n, dtype=torch.bool, device=shallow.device)
        taken[accepted[:local_total]] = True
    masked = deep.float().masked_fill(taken, float("-inf"))
    n_global = min(budget - local_total, n - int(taken.sum()))
    global_idx = masked.topk(n_global).indices
    return torch.sort(torch.cat([taken.nonzero().flatten(), global_idx])).values
