"""Where a prompt's visual tokens are and what each one is: the adapter's answer, in one shape for all families."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trio_vlm.methods.base import RowTable

#: Per-token metadata carried from the layout to every stage's groups.
META_FIELDS = ("vision_row", "patch", "tile", "row", "col")


@dataclass
class VisualItem:
    """One image or video of one sample, as laid out in the prompt.

    ``positions`` are the prompt positions of its prunable tokens (ascending; structural tokens such as
    LLaVA-NeXT's row newlines are left out and always kept). Per token: ``vision_row`` is the row of the
    vision-side tables (a CLIP tile, a Qwen2.5-VL image or video) the token comes from, ``patch`` its index
    on that row's patch axis, ``tile``/``row``/``col`` its spatial place (see :class:`~trio_vlm.methods.base.Group`).
    """

    positions: torch.Tensor
    vision_row: torch.Tensor
    patch: torch.Tensor
    tile: torch.Tensor
    row: torch.Tensor | None = None
    col: torch.Tensor | None = None
    kind: str = "image"

    def __post_init__(self) -> None:
        n = self.positions.numel()
        for name in META_FIELDS:
            value = getattr(self, name)
            if value is not None and value.numel() != n:
                raise ValueError(f"visual item has {n} tokens but {value.numel()} {name} entries")


def square_item(positions: torch.Tensor, vision_row: int, side: int | None = None) -> VisualItem:
    """A whole image of ``positions.numel()`` tokens in raster order on one vision row (LLaVA-1.5)."""
    n = positions.numel()
    patch = torch.arange(n, device=positions.device)
    side = side if side is not None else int(round(n**0.5))
    square = side * side == n
    return VisualItem(
        positions=positions,
        vision_row=torch.full((n,), vision_row, dtype=torch.long, device=positions.device),
        patch=patch,
        tile=torch.zeros(n, dtype=torch.long, device=positions.device),
        row=torch.div(patch, side, rounding_mode="floor") if square else None,
        col=patch % side if square else None,
    )


@dataclass
class SampleMeta:
    """One sample's per-visual-token metadata, indexed by original visual index."""

    fields: dict[str, torch.Tensor | None] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)

    @classmethod
    def from_items(cls, items: list[VisualItem], device: torch.device) -> SampleMeta:
        out: dict[str, torch.Tensor | None] = {}
        for name in META_FIELDS:
            parts = [getattr(item, name) for item in items]
            if not parts:
                out[name] = torch.empty(0, dtype=torch.long, device=device)
            elif any(p is None for p in parts):
                out[name] = None
            else:
                out[name] = torch.cat([p.to(device) for p in parts])
        return cls(fields=out, kinds=[item.kind for item in items])

    def take(self, name: str, original: torch.Tensor) -> torch.Tensor | None:
        value = self.fields.get(name)
        return None if value is None else value[original]


def align_rows(
    rows: list[torch.Tensor], pieces: list[tuple[int, torch.Tensor]], prefix: int = 0
) -> torch.Tensor | RowTable:
    """Vision-side rows with each listed row restricted to the given patch indices.

    ``pieces`` are ``(row, patch indices)`` of groups that lie on one row; ``prefix`` leading entries of
    every row (a [CLS] slot) are kept in front. Rows of equal shape come back stacked as one tensor.
    """
    aligned = list(rows)
    for row, patch in pieces:
        full = rows[row]
        n = full.shape[0] - prefix
        if patch.numel() == n and bool((patch == torch.arange(n, device=patch.device)).all()):
            continue
        body = full[prefix:].index_select(0, patch.to(full.device))
        aligned[row] = torch.cat([full[:prefix], body]) if prefix else body
    if len({tuple(r.shape) for r in aligned}) == 1:
        return torch.stack(aligned)
    return RowTable(aligned)


def split_keep(keep: int, sizes: list[int]) -> list[int]:
    """Split an image's budget ``keep`` over tiles of ``sizes`` tokens in proportion to their size.

    Floors of ``keep · size / total``, then one more for the largest remainders (earlier tile first on
    ties); every tile keeps at least one token and at most its size (so a budget below the number of tiles
    keeps one per tile).
    """
    total = sum(sizes)
    if keep >= total:
        return list(sizes)
    exact = [keep * s / total for s in sizes]
    quotas = [max(1, min(s, int(e))) for s, e in zip(sizes, exact)]
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - int(exact[i])), i))
    while sum(quotas) < keep:
        grew = False
        for i in order:
            if sum(quotas) >= keep:
                break
            if quotas[i] < sizes[i]:
                quotas[i] += 1
                grew = True
        if not grew:
            break
    while sum(quotas) > max(keep, len(sizes)):
        i = max((j for j in range(len(sizes)) if quotas[j] > 1), key=lambda j: (quotas[j] - exact[j], j))
        quotas[i] -= 1
    return quotas
