"""Per-token bookkeeping of a pruned prefill and the one place where sequences are cut, reordered and re-padded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from trio_vlm.contract import VisualItem
from trio_vlm.engine.layout import SampleMeta


def last_valid_index(padding: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's last real token."""
    seq = padding.shape[1]
    return seq - 1 - padding.flip(1).int().argmax(1)


@dataclass
class SequenceState:
    """What each slot of the current (possibly pruned) prefill sequence is.

    ``padding`` (B, S) real tokens; ``visual`` the sample-level original visual index (-1 for text/padding;
    indices past the sample's visual tokens name tokens a stage created); ``image`` which image of the sample
    the token belongs to (-1 otherwise); ``prompt_index`` the slot's position in the original prompt (-1 for
    created tokens and re-padding); ``original_position_ids`` the position ids before any drop;
    ``position_ids`` those the layers use now, both (A, B, S) with A = 1 for 1-D RoPE and A = 3 for
    Qwen2.5-VL's M-RoPE (temporal, height, width); ``dropped`` the net number of tokens removed per sample.
    """

    padding: torch.Tensor
    visual: torch.Tensor
    image: torch.Tensor
    prompt_index: torch.Tensor
    original_position_ids: torch.Tensor
    position_ids: torch.Tensor
    dropped: torch.Tensor
    pad_left: bool
    all_real: bool = False  # host: no padding slot anywhere (every sample has the same real length)

    @property
    def length(self) -> int:
        return int(self.padding.shape[1])

    def to(self, device: torch.device) -> SequenceState:
        """The same state on ``device`` (a model split over devices prunes on the device of the next layer)."""
        if self.padding.device == device:
            return self
        return SequenceState(
            **{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        )


def start_state(
    layout: list[list[VisualItem]], padding: torch.Tensor, position_ids: torch.Tensor
) -> tuple[SequenceState, list[SampleMeta]]:
    """The state of a prompt before any drop, and each sample's per-visual-token metadata, from the adapter's
    layout (per sample, its images/videos in prompt order), the 2-D ``padding`` and the (A, B, S) positions."""
    bsz, seq = padding.shape
    device = padding.device
    # one host read for the padding facts: any padded first slot, all last slots real, no padding at all
    first_padded, last_real, all_real = torch.stack(
        [(~padding[:, 0]).any(), padding[:, -1].all(), padding.all()]
    ).tolist()
    pad_left = bool(first_padded) and bool(last_real)
    image = torch.full((bsz, seq), -1, dtype=torch.long, device=device)
    visual = torch.full((bsz, seq), -1, dtype=torch.long, device=device)
    metas = []
    for b, items in enumerate(layout):
        count = 0
        for m, item in enumerate(items):
            pos = item.seq_index.to(device)
            image[b, pos] = m
            visual[b, pos] = torch.arange(count, count + pos.numel(), device=device)
            count += pos.numel()
        metas.append(SampleMeta.from_items(items, device))
    state = SequenceState(
        padding=padding,
        visual=visual,
        image=image,
        prompt_index=torch.arange(seq, device=device).expand(bsz, -1).clone(),
        original_position_ids=position_ids.clone(),
        position_ids=position_ids.clone(),
        dropped=torch.zeros(bsz, dtype=torch.long, device=device),
        pad_left=pad_left,
        all_real=all_real,
    )
    return state, metas


@dataclass
class Insert:
    """New rows placed right after (or, with ``before``, right before) slot ``slot`` of sample ``sample``.

    In "original" position mode each row takes the position ids of its ``anchors`` slot; it belongs to image
    ``image`` of the sample and gets the original visual indices ``visual`` (past the sample's visual tokens).
    """

    sample: int
    slot: torch.Tensor
    rows: torch.Tensor
    anchors: torch.Tensor
    image: int
    visual: torch.Tensor
    before: bool = False


@dataclass
class Surgery:
    """How one stage rebuilds each sample's sequence: ``keep`` (B, S) marks the surviving slots; ``moves``
    ``(sample, slots, sources)`` make surviving ``slots`` take the contents of ``sources`` (a permutation of
    the same slots: ``Selection.order``); ``replace`` ``(sample, slots, rows)`` gives surviving slots new
    features; ``inserts`` add rows. ``lengths`` (optional, host ints) are the new real lengths per sample when
    the caller knows them (saves a device sync)."""

    keep: torch.Tensor
    moves: list[tuple[int, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    replace: list[tuple[int, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    inserts: list[Insert] = field(default_factory=list)
    lengths: list[int] | None = None


def rebuild(
    state: SequenceState, hidden: torch.Tensor, surgery: Surgery, compact: bool
) -> tuple[SequenceState, torch.Tensor]:
    """Apply ``surgery`` to ``hidden`` (B, S, D) and ``state``; returns the new state and hidden states.

    Samples are re-padded to the longest, on the side the input was padded. Position ids: ``compact``
    closes the gaps (every token's position drops by the number of tokens removed before it, and rises by the
    rows inserted before it: LLaVA's renumbering, also per axis for M-RoPE); otherwise every token keeps its
    position ids and an inserted row takes its anchor's. All tensor work, no per-token host loop.
    """
    bsz, seq, dim = hidden.shape
    device = hidden.device
    long = torch.long
    hidden = hidden.clone()
    for b, slots, rows in surgery.replace:
        hidden[b, slots] = rows.to(hidden.dtype)
    source = torch.arange(seq, device=device).expand(bsz, -1).clone()
    for b, slots, sources in surgery.moves:
        source[b, slots] = sources
    # One entry per old slot, then the inserted rows of each sample; sort entries by an order key.
    per_sample = [[ins for ins in surgery.inserts if ins.sample == b] for b in range(bsz)]
    n_ins = [sum(int(ins.rows.shape[0]) for ins in group) for group in per_sample]
    width = seq + max(n_ins, default=0)
    stride = 1 + max((int(ins.rows.shape[0]) for ins in surgery.inserts), default=0)
    big = torch.iinfo(long).max // 4
    slot_ids = torch.arange(seq, device=device)
    key = torch.full((bsz, width), big, dtype=long, device=device)
    key[:, :seq] = torch.where(surgery.keep, 2 * slot_ids * stride, big)
    key_slot = torch.zeros(bsz, width, dtype=long, device=device)
    key_slot[:, :seq] = slot_ids
    after = torch.zeros(bsz, width, dtype=torch.bool, device=device)
    is_insert = torch.zeros(bsz, width, dtype=torch.bool, device=device)
    ins_visual = torch.full((bsz, width), -1, dtype=long, device=device)
    ins_image = torch.full((bsz, width), -1, dtype=long, device=device)
    ins_anchor = torch.zeros(bsz, width, dtype=long, device=device)
    rows_all: list[torch.Tensor] = []
    row_index = torch.full((bsz, width), -1, dtype=long, device=device)
    for b, group in enumerate(per_sample):
        col = seq
        for ins in group:
            n = int(ins.rows.shape[0])
            cols = slice(col, col + n)
            sub = torch.arange(n, device=device)
            slot = ins.slot.to(device=device, dtype=long)
            key[b, cols] = (2 * slot + (-1 if ins.before else 1)) * stride + sub
            key_slot[b, cols] = slot
            after[b, cols] = not ins.before
            is_insert[b, cols] = True
            ins_visual[b, cols] = ins.visual.to(device)
            ins_image[b, cols] = ins.image
            ins_anchor[b, cols] = ins.anchors.to(device)
            row_index[b, cols] = sum(int(r.shape[0]) for r in rows_all) + sub
            rows_all.append(ins.rows.to(hidden.dtype))
            col += n
    order = torch.sort(key, dim=1, stable=True).indices
    live = key.gather(1, order) < big
    counts = live.sum(1)
    new_len = max(surgery.lengths) if surgery.lengths is not None else int(counts.max())
    slot = torch.arange(new_len, device=device)[None, :].expand(bsz, -1)
    shift = (new_len - counts)[:, None] if state.pad_left else torch.zeros_like(counts)[:, None]
    rank = slot - shift
    valid = (rank >= 0) & (rank < counts[:, None])
    entry = order.gather(1, rank.clamp(0, width - 1))  # (B, new_len): which entry fills each new slot

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t.gather(1, entry)

    inserted = pick(is_insert) & valid
    from_slot = valid & ~inserted
    old_slot = pick(key_slot)
    src = source.gather(1, old_slot.clamp(max=seq - 1))
    gathered = hidden.gather(1, src[..., None].expand(-1, -1, dim))
    new_hidden = torch.where(from_slot[..., None], gathered, torch.zeros_like(gathered))
    if rows_all:
        table = torch.cat(rows_all)
        idx = pick(row_index)
        new_hidden = torch.where(inserted[..., None], table[idx.clamp(min=0)], new_hidden)

    def take(t: torch.Tensor, fill: int, index: torch.Tensor) -> torch.Tensor:
        if t.dim() == 3:  # (A, B, S) position ids
            picked = t.gather(2, index[None].expand(t.shape[0], -1, -1))
            return torch.where(from_slot[None], picked, torch.full_like(picked, fill))
        return torch.where(from_slot, t.gather(1, index), torch.full_like(index, fill))

    anchor = torch.where(inserted, pick(ins_anchor), src)
    padding = (from_slot & state.padding.gather(1, src)) | inserted
    visual = torch.where(inserted, pick(ins_visual), take(state.visual, -1, src))
    image = torch.where(inserted, pick(ins_image), take(state.image, -1, src))
    prompt_index = take(state.prompt_index, -1, src)
    anchor3 = anchor[None].expand(state.position_ids.shape[0], -1, -1)
    original = torch.where(valid[None], state.original_position_ids.gather(2, anchor3), 0)
    if compact:
        removed = (~surgery.keep).long()
        removed_before = torch.cumsum(removed, 1) - removed
        key_positions = state.position_ids.gather(2, old_slot.clamp(max=seq - 1)[None].expand_as(anchor3))
        inserts_before = torch.cumsum(inserted.long(), 1) - inserted.long()
        delta = (
            inserts_before
            - removed_before.gather(1, old_slot.clamp(max=seq - 1))
            + (inserted & pick(after)).long()
        )
        positions = torch.where(valid[None], key_positions + delta[None], 0)
    else:
        positions = torch.where(valid[None], state.position_ids.gather(2, anchor3), 0)
    new_state = SequenceState(
        padding=padding,
        visual=visual,
        image=image,
        prompt_index=prompt_index,
        original_position_ids=original,
        position_ids=positions,
        dropped=state.dropped + (state.padding.sum(1) - padding.sum(1)),
        pad_left=state.pad_left,
        all_real=state.all_real and surgery.lengths is not None and len(set(surgery.lengths)) == 1,
    )
    return new_state, new_hidden


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors in ``value`` (nested tuples/lists/dicts) moved to ``device``; everything else as is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    return value
