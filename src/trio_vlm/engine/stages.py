"""One stage as pure functions: the groups it prunes, the checks on a method's answer, the surgery and the event.

Nothing here touches hooks or the model: given the sequence state and a method's :class:`Selection`, these
functions say what the new sequence is (:class:`~trio_vlm.engine.sequence.Surgery`) and what to record.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from trio_vlm.contract import Group, PruneEvent, Selection, Stage
from trio_vlm.engine.layout import SampleMeta, split_keep
from trio_vlm.engine.sequence import Insert, SequenceState, Surgery


def stage_groups(
    state: SequenceState,
    metas: list[SampleMeta],
    keep_for: Callable[[int], int],
    split_tiles: bool,
) -> tuple[list[Group], list[Group], list[tuple[int, torch.Tensor]]]:
    """(groups to prune, groups kept whole, (vision row, patch indices) of groups lying on one row).

    One group per image per sample, keeping ``keep_for(size)`` tokens; with ``split_tiles`` (the encoder
    stage of a family that prunes tiles separately, LLaVA-NeXT) one group per tile, the image's budget split
    over its tiles by size."""
    to_prune: list[Group] = []
    whole: list[Group] = []
    pieces: list[tuple[int, torch.Tensor]] = []
    for b, meta in enumerate(metas):
        for m in range(len(meta.kinds)):
            pos = (state.image[b] == m).nonzero().flatten()
            if pos.numel() == 0:
                continue
            original = state.visual[b, pos]
            keep = keep_for(int(pos.numel()))
            parts = [(pos, original, keep)]
            tile = meta.take("tile", original)
            if split_tiles and tile is not None and int(tile.max()) > int(tile.min()):
                tiles = torch.unique(tile)
                masks = [tile == t for t in tiles]
                quotas = split_keep(keep, [int(mask.sum()) for mask in masks])
                parts = [(pos[mask], original[mask], q) for mask, q in zip(masks, quotas)]
            for p, o, k in parts:
                rows = meta.take("vision_row", o)
                image_row = int(rows[0]) if rows is not None else len(to_prune) + len(whole)
                group = Group(
                    sample=b,
                    image_row=image_row,
                    seq_index=p,
                    original=o,
                    keep=k,
                    tile=meta.take("tile", o),
                    row=meta.take("row", o),
                    col=meta.take("col", o),
                    kind=meta.kinds[m],
                    patch=meta.take("patch", o),
                )
                if rows is not None and bool((rows == image_row).all()):
                    pieces.append((image_row, meta.take("patch", o)))
                (to_prune if group.keep < group.size else whole).append(group)
    return to_prune, whole, pieces


def check_selection(
    selection: Selection, groups: list[Group], dim: int, images: list[int] | None = None
) -> None:
    """``RuntimeError`` naming what is wrong with a method's answer for ``groups``.

    ``images`` (optional) names each group's image within its sample: a group may then keep nothing as long
    as another group of the same image keeps something (a LLaVA-NeXT crop tile emptied at the encoder stage)."""
    n = len(groups)
    if len(selection.kept) != n or len(selection.scores) != n:
        raise RuntimeError(f"method returned {len(selection.kept)} selections for {n} images")
    for name in ("replacement", "order", "appended", "prepended"):
        value = getattr(selection, name)
        if value is not None and len(value) != n:
            raise RuntimeError(f"method returned {len(value)} {name} entries for {n} images")
    keys = [(g.sample, i if images is None else images[i]) for i, g in enumerate(groups)]
    kept_per_image: dict[tuple[int, int], int] = {}
    for key, kept in zip(keys, selection.kept):
        kept_per_image[key] = kept_per_image.get(key, 0) + int(kept.numel())
    if any(count == 0 for count in kept_per_image.values()):
        raise RuntimeError("method kept no token of an image")
    for i, (g, kept) in enumerate(zip(groups, selection.kept)):
        if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= g.size):
            raise RuntimeError(f"method selected an index outside 0..{g.size - 1}")
        if kept.numel() > 1 and not bool((kept[1:] > kept[:-1]).all()):
            raise RuntimeError("method must return strictly ascending, unique indices")
        order = selection.order[i] if selection.order is not None else None
        if order is not None and not torch.equal(
            torch.sort(order.flatten()).values.cpu(), torch.arange(kept.numel())
        ):
            raise RuntimeError("Selection.order must be a permutation of range(len(kept))")
        replacement = selection.replacement[i] if selection.replacement is not None else None
        if replacement is not None and tuple(replacement.shape) != (kept.numel(), dim):
            raise RuntimeError(
                f"replacement features must be ({kept.numel()}, {dim}), got {tuple(replacement.shape)}"
            )
        for name in ("appended", "prepended"):
            rows = getattr(selection, name)[i] if getattr(selection, name) is not None else None
            if rows is not None and (rows.dim() != 2 or rows.shape[1] != dim):
                raise RuntimeError(f"{name} rows must be (n, {dim}), got {tuple(rows.shape)}")
            if rows is not None and rows.shape[0] and kept.numel() == 0:
                raise RuntimeError(f"{name} rows need a kept token of their group to sit next to")


def _entry(value: list | None, i: int):
    return None if value is None else value[i]


def stage_surgery(
    state: SequenceState, metas: list[SampleMeta], groups: list[Group], selection: Selection
) -> tuple[Surgery, list[torch.Tensor]]:
    """The surgery that realises ``selection`` and the original indices of each group's created tokens
    (registered in ``metas``)."""
    keep = torch.ones_like(state.padding)
    surgery = Surgery(keep=keep)
    created: list[torch.Tensor] = []
    for i, (g, kept) in enumerate(zip(groups, selection.kept)):
        drop = torch.ones(g.size, dtype=torch.bool, device=keep.device)
        drop[kept] = False
        keep[g.sample, g.seq_index[drop]] = False
        slots = g.seq_index[kept]
        replacement = _entry(selection.replacement, i)
        if replacement is not None:
            surgery.replace.append((g.sample, slots, replacement))
        order = _entry(selection.order, i)
        if order is not None:
            surgery.moves.append((g.sample, slots, slots[order.to(slots.device)]))
        image = int(state.image[g.sample, g.seq_index[0]])
        new: list[torch.Tensor] = []
        for name, before in (("prepended", True), ("appended", False)):
            rows = _entry(getattr(selection, name), i)
            if rows is None or rows.shape[0] == 0:
                continue
            anchor_slot = slots[0] if before else slots[-1]
            anchor_original = g.original[kept[0] if before else kept[-1]]
            visual = metas[g.sample].extend(anchor_original.repeat(rows.shape[0]))
            surgery.inserts.append(
                Insert(
                    sample=g.sample,
                    slot=anchor_slot,
                    rows=rows,
                    anchors=anchor_slot.repeat(rows.shape[0]),
                    image=image,
                    visual=visual,
                    before=before,
                )
            )
            new.append(visual)
        created.append(torch.cat(new) if new else g.original[:0])
    return surgery, created


def stage_event(
    stage: Stage,
    call: int,
    method: str,
    batch: int,
    to_prune: list[Group],
    whole: list[Group],
    selection: Selection,
    created: list[torch.Tensor],
) -> PruneEvent:
    """The record of one stage: per sample, the candidates, their scores and what was kept (original indices)."""
    cand: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    scores: list[list[torch.Tensor | None]] = [[] for _ in range(batch)]
    kept: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    for i, g in enumerate(to_prune):
        cand[g.sample].append(g.original)
        scores[g.sample].append(selection.scores[i])
        kept[g.sample].append(g.original[selection.kept[i]])
        if created and created[i].numel():
            kept[g.sample].append(created[i])
    for g in whole:
        cand[g.sample].append(g.original)
        scores[g.sample].append(None)
        kept[g.sample].append(g.original)

    def cat(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.sort(torch.cat(parts)).values.cpu() if parts else torch.empty(0, dtype=torch.long)

    def cat_scores(b: int) -> torch.Tensor | None:
        if not scores[b] or any(s is None for s in scores[b]):
            return None
        order = torch.argsort(torch.cat(cand[b]).cpu())
        return torch.cat([s.detach().float().cpu() for s in scores[b]])[order]

    return PruneEvent(
        stage=stage,
        call=call,
        method=method,
        candidates=[cat(c) for c in cand],
        scores=[cat_scores(b) for b in range(batch)],
        kept=[cat(k) for k in kept],
    )
