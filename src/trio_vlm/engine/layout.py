"""Per-token metadata of a prompt's visual tokens (from the adapter's :class:`~trio_vlm.contract.VisualItem` s),
vision-side rows aligned with groups, and budgets split over tiles."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from trio_vlm.contract import META_FIELDS, RowTable, VisualItem


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

    @property
    def count(self) -> int:
        """Visual tokens known to this sample (the prompt's, then tokens stages created)."""
        patch = self.fields.get("patch")
        return 0 if patch is None else int(patch.numel())

    def take(self, name: str, original: torch.Tensor) -> torch.Tensor | None:
        value = self.fields.get(name)
        return None if value is None else value[original]

    def extend(self, anchors: torch.Tensor) -> torch.Tensor:
        """Register tokens a stage created, each with the metadata of its anchor (an original index);
        returns their new original indices (past every index so far)."""
        start = self.count
        for name, value in self.fields.items():
            if value is not None:
                self.fields[name] = torch.cat([value, value[anchors.to(value.device)]])
        return torch.arange(start, start + anchors.numel(), device=anchors.device)


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


def vision_row_count(layout: list[list[VisualItem]]) -> int:
    """Distinct vision rows the layout's items come from."""
    rows = {int(r) for items in layout for item in items for r in torch.unique(item.vision_row).tolist()}
    return len(rows)


def share_expanded_rows(
    layout: list[list[VisualItem]], kinds: torch.Tensor, captured: int
) -> list[list[VisualItem]]:
    """The layout of a batch that ``generate`` expanded (beam search, ``num_return_sequences``: every prompt
    repeated ``e`` times in a row) while the vision tower ran once per original image: each copy's tokens
    point at the vision rows of its prompt's first copy, renumbered as the tower saw them (``captured``
    rows). ``ValueError`` when no expansion explains the rows."""
    batch = kinds.shape[0]
    for e in range(2, batch + 1):
        if batch % e:
            continue
        leaders = list(range(0, batch, e))
        if not all(torch.equal(kinds[s], kinds[s - s % e]) for s in range(batch)):
            continue
        rows = sorted(
            {int(r) for b in leaders for item in layout[b] for r in torch.unique(item.vision_row).tolist()}
        )
        if len(rows) != captured:
            continue
        lut = torch.full((rows[-1] + 1,), -1, dtype=torch.long)
        lut[torch.tensor(rows)] = torch.arange(len(rows))
        renumbered = {
            b: [
                dataclasses.replace(item, vision_row=lut.to(item.vision_row.device)[item.vision_row])
                for item in layout[b]
            ]
            for b in leaders
        }
        return [renumbered[s - s % e] for s in range(batch)]
    raise ValueError(
        f"the prompt's images use {vision_row_count(layout)} vision rows but the vision tower encoded {captured}: "
        "the batch does not match the images it was given"
    )
