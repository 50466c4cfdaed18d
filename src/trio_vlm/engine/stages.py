"""One stage as pure functions: the groups it prunes, the checks on a method's answer, the surgery and the event.

Nothing here touches hooks or the model: given the sequence state and a method's :class:`Selection`, these
functions say what the new sequence is (:class:`~trio_vlm.engine.sequence.Surgery`) and what to record.

The host keeps what it must know about every image — how many tokens it holds now, its tiles and vision rows
— in :class:`ImageTrack` s, updated from shapes after every stage, so no stage waits for the device: group
positions are found with fixed-size ``nonzero_static``, the method's answer is checked on the device (read once
after the prefill) and events are gathered when first read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from trio_vlm.contract import Group, PruneEvent, Selection, Stage, VisualItem
from trio_vlm.engine.layout import SampleMeta, split_keep
from trio_vlm.engine.sequence import Insert, SequenceState, Surgery


@dataclass
class Tile:
    """Host facts about one tile of an image as the prompt lays it out: its id, tokens, vision row, and whether
    it covers its vision row whole (in raster order) or is a piece of it (a crop cut by unpadding)."""

    id: int
    size: int
    vision_row: int
    whole: bool


@dataclass
class ImageTrack:
    """Host facts about one image (or video) of one sample: its tokens now, and its tiles before any drop."""

    sample: int
    image: int
    kind: str
    size: int
    tiles: list[Tile] | None = None


def image_tracks(
    layout: list[list[VisualItem]], rows_needed: bool, row_length: Callable[[int], int] | None = None
) -> list[ImageTrack]:
    """The tracks of a prompt's images. Their tiles and vision rows are read from the device only when
    ``rows_needed`` (the method reads vision-side tables), with one read for the whole batch;
    ``row_length(row)`` gives a vision row's patch count (a tile covering it all is ``whole``)."""
    tracks = [
        ImageTrack(b, m, item.kind, int(item.seq_index.numel()))
        for b, items in enumerate(layout)
        for m, item in enumerate(items)
    ]
    items = [item for sample in layout for item in sample]
    if not rows_needed or not items:
        return tracks
    ids = torch.cat([torch.full_like(item.tile, i) for i, item in enumerate(items)])
    table = torch.stack(
        [ids, torch.cat([item.tile for item in items]), torch.cat([item.vision_row for item in items])]
    )
    counts: dict[tuple[int, int], list[int]] = {}
    for i, tile, row in zip(*table.tolist()):  # the one host read
        entry = counts.setdefault((i, tile), [0, row])
        entry[0] += 1
    for (i, tile_id), (size, row) in sorted(counts.items()):
        whole = row_length is None or row_length(row) == size
        tracks[i].tiles = [*(tracks[i].tiles or []), Tile(tile_id, size, row, whole)]
    return tracks


def _positions(mask: torch.Tensor, size: int) -> torch.Tensor:
    """The ``size`` positions where ``mask`` is true, ascending, without waiting for the device."""
    return torch.nonzero_static(mask, size=size).flatten()


def stage_groups(
    tracks: list[ImageTrack],
    state: SequenceState,
    metas: list[SampleMeta],
    keep_for: Callable[[int], int],
    split_tiles: bool,
) -> tuple[list[Group], list[Group], list[tuple[int, torch.Tensor]]]:
    """(groups to prune, groups kept whole, (vision row, patch indices) of groups on a piece of a vision row).

    One group per image per sample, keeping ``keep_for(size)`` tokens; with ``split_tiles`` (the encoder stage of
    a family that prunes tiles separately, LLaVA-NeXT) one group per tile, the image's budget split over its tiles
    by size. ``image_row`` is the group's vision row (its image's first tile's when it spans several)."""
    to_prune: list[Group] = []
    whole: list[Group] = []
    pieces: list[tuple[int, torch.Tensor]] = []
    for track in tracks:
        if track.size == 0:
            continue
        b, meta = track.sample, metas[track.sample]
        pos = _positions(state.image[b] == track.image, track.size)
        original = state.visual[b, pos]
        keep = keep_for(track.size)
        tiles = track.tiles if split_tiles and track.tiles and len(track.tiles) > 1 else None
        if tiles is None:
            first = track.tiles[0] if track.tiles else None
            parts = [(pos, original, keep, first)]
        else:
            tile_of = meta.take("tile", original)
            quotas = split_keep(keep, [t.size for t in tiles])
            parts = []
            for t, quota in zip(tiles, quotas):
                local = _positions(tile_of == t.id, t.size)
                parts.append((pos[local], original[local], quota, t))
        for p, o, k, tile in parts:
            group = Group(
                sample=b,
                image_row=tile.vision_row if tile is not None else len(to_prune) + len(whole),
                seq_index=p,
                original=o,
                keep=k,
                tile=meta.take("tile", o),
                row=meta.take("row", o),
                col=meta.take("col", o),
                kind=track.kind,
                patch=meta.take("patch", o),
                image=track.image,
            )
            if tile is not None and not tile.whole and (tiles is not None or len(track.tiles or ()) == 1):
                pieces.append((tile.vision_row, meta.take("patch", o)))
            (to_prune if group.keep < group.size else whole).append(group)
    return to_prune, whole, pieces


def check_selection(
    selection: Selection, groups: list[Group], dim: int, split_tiles: bool
) -> torch.Tensor | None:
    """``RuntimeError`` naming what is wrong with the shapes of a method's answer for ``groups``; returns a device
    flag (``None`` if nothing to check) that is true when a value is wrong (an index out of range, not ascending,
    an order that is not a permutation) — read once after the prefill, so no stage waits for the device.

    With ``split_tiles`` a group (a tile) may keep nothing as long as another tile of its image keeps something
    (a LLaVA-NeXT crop tile emptied at the encoder stage)."""
    n = len(groups)
    if len(selection.kept) != n or len(selection.scores) != n:
        raise RuntimeError(f"method returned {len(selection.kept)} selections for {n} images")
    for name in ("replacement", "order", "appended", "prepended"):
        value = getattr(selection, name)
        if value is not None and len(value) != n:
            raise RuntimeError(f"method returned {len(value)} {name} entries for {n} images")
    kept_per_image: dict[tuple[int, int], int] = {}
    for i, (g, kept) in enumerate(zip(groups, selection.kept)):
        key = (g.sample, g.image if split_tiles else i)
        kept_per_image[key] = kept_per_image.get(key, 0) + int(kept.numel())
    if any(count == 0 for count in kept_per_image.values()):
        raise RuntimeError("method kept no token of an image")
    flags: list[torch.Tensor] = []
    for i, (g, kept) in enumerate(zip(groups, selection.kept)):
        if kept.dim() != 1 or kept.numel() > g.size:
            raise RuntimeError(f"method kept {tuple(kept.shape)} indices of a group of {g.size} tokens")
        if kept.numel():
            flags.append((kept.min() < 0) | (kept.max() >= g.size))
        if kept.numel() > 1:
            flags.append(~(kept[1:] > kept[:-1]).all())
        order = selection.order[i] if selection.order is not None else None
        if order is not None:
            if order.numel() != kept.numel():
                raise RuntimeError("Selection.order must be a permutation of range(len(kept))")
            seen = torch.zeros(kept.numel() + 1, dtype=torch.long, device=order.device)
            seen.scatter_add_(0, order.flatten().clamp(0, kept.numel()), torch.ones_like(order.flatten()))
            flags.append((seen[:-1] != 1).any())
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
    if not flags:
        return None
    return torch.stack([f.to(flags[0].device).reshape(()) for f in flags]).any()


def _entry(value: list | None, i: int):
    return None if value is None else value[i]


def stage_surgery(
    state: SequenceState, metas: list[SampleMeta], groups: list[Group], selection: Selection
) -> tuple[Surgery, list[torch.Tensor], dict[tuple[int, int], int]]:
    """The surgery that realises ``selection``, the original indices of each group's created tokens (registered
    in ``metas``), and every image's token count after it (host, from shapes)."""
    keep = torch.ones_like(state.padding)
    surgery = Surgery(keep=keep)
    created: list[torch.Tensor] = []
    sizes: dict[tuple[int, int], int] = {}
    changed = [0] * state.padding.shape[0]
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
                    image=g.image,
                    visual=visual,
                    before=before,
                )
            )
            new.append(visual)
        created.append(torch.cat(new) if new else g.original[:0])
        after = int(kept.numel()) + int(created[-1].numel())
        sizes[(g.sample, g.image)] = sizes.get((g.sample, g.image), 0) + after
        changed[g.sample] += after - g.size
    surgery.lengths = [state.length + delta for delta in changed]
    return surgery, created, sizes


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
    """The record of one stage: per sample, the candidates, their scores and what was kept (original indices),
    gathered from the device when the event is first read."""
    cand: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    scores: list[list[torch.Tensor | None]] = [[] for _ in range(batch)]
    kept: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    for i, g in enumerate(to_prune):
        cand[g.sample].append(g.original)
        scores[g.sample].append(selection.scores[i].detach() if selection.scores[i] is not None else None)
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
        return torch.cat([s.float().cpu() for s in scores[b]])[order]

    def materialize() -> tuple[list[torch.Tensor], list[torch.Tensor | None], list[torch.Tensor]]:
        return [cat(c) for c in cand], [cat_scores(b) for b in range(batch)], [cat(k) for k in kept]

    return PruneEvent(stage, call, method, materialize)
