"""Per-token bookkeeping of a pruned prefill and the one place where sequences are gathered and re-padded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def last_valid_index(padding: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's last real token."""
    seq = padding.shape[1]
    return seq - 1 - padding.flip(1).int().argmax(1)


@dataclass
class SequenceState:
    """What each position of the current (possibly pruned) prefill sequence is.

    ``padding`` real tokens; ``visual`` the sample-level original visual index (-1 for text/padding);
    ``image`` which image of the sample the token belongs to (-1 otherwise); ``original_positions`` the
    position ids before any drop; ``positions`` those the layers use now, both (A, B, S) with A = 1 for 1-D
    RoPE and A = 3 for Qwen2.5-VL's M-RoPE (temporal, height, width); ``dropped`` tokens dropped per sample.
    """

    padding: torch.Tensor
    visual: torch.Tensor
    image: torch.Tensor
    original_positions: torch.Tensor
    positions: torch.Tensor
    dropped: torch.Tensor
    pad_left: bool

    @property
    def length(self) -> int:
        return int(self.padding.shape[1])

    def to(self, device: torch.device) -> SequenceState:
        """The same state on ``device`` (a model split over devices prunes on the device of the next layer)."""
        if self.padding.device == device:
            return self
        return SequenceState(
            padding=self.padding.to(device),
            visual=self.visual.to(device),
            image=self.image.to(device),
            original_positions=self.original_positions.to(device),
            positions=self.positions.to(device),
            dropped=self.dropped.to(device),
            pad_left=self.pad_left,
        )

    def gather(self, keep: torch.Tensor, compact: bool) -> tuple[SequenceState, torch.Tensor, torch.Tensor]:
        """Keep positions where ``keep`` (B, S) is True; returns the new state, the (B, S') source index and
        the (B, S') validity of each new slot (re-padding slots are False)."""
        counts = keep.sum(1)
        new_len = int(counts.max())
        bsz = keep.shape[0]
        slot = torch.arange(new_len, device=keep.device)[None, :].expand(bsz, -1)
        if self.pad_left:
            valid = slot >= (new_len - counts)[:, None]
            rank = slot - (new_len - counts)[:, None]
        else:
            valid = slot < counts[:, None]
            rank = slot
        # source index of the r-th kept token of each row
        order = torch.sort((~keep).int(), dim=1, stable=True).indices  # kept positions first, in order
        index = order.gather(1, rank.clamp(min=0, max=keep.shape[1] - 1))
        dropped_before = torch.cumsum((~keep).long(), 1)
        shifted = self.positions - dropped_before[None] if compact else self.positions

        def take(t: torch.Tensor, fill: int) -> torch.Tensor:
            if t.dim() == 3:  # (A, B, S) positions: gather along the sequence axis of every row
                picked = t.gather(2, index[None].expand(t.shape[0], -1, -1))
                return torch.where(valid[None], picked, torch.full_like(picked, fill))
            return torch.where(valid, t.gather(1, index), torch.full_like(index, fill))

        new = SequenceState(
            padding=self.padding.gather(1, index) & valid,
            visual=take(self.visual, -1),
            image=take(self.image, -1),
            original_positions=take(self.original_positions, 0),
            positions=take(shifted, 0),
            dropped=self.dropped + (keep.shape[1] - counts),
            pad_left=self.pad_left,
        )
        return new, index, valid


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors in ``value`` (nested tuples/lists/dicts) moved to ``device``; everything else as is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    return value


def gather_hidden(hidden: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Gather (B, S, D) rows by ``index`` (B, S'); re-padding slots are zeros."""
    out = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))
    return out * valid[..., None].to(out.dtype)
