"""The inspectable record of every drop made inside ``trio_vlm.apply``."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PruneEvent:
    """One drop during one prefill call.

    ``stage`` is ``"encoder"`` or the number of decoder layers already run (the schedule's ``L``).
    ``layer_index`` is the 0-based decoder layer that first sees the shorter sequence. Per sample:
    ``candidates`` are the original visual-token indices that entered the stage, ``scores`` the score of each
    candidate (``None`` when the stage kept everything and scored nothing), ``kept`` the original indices kept,
    ascending. Original indices count the sample's visual tokens in prompt order (image 0 first).
    """

    stage: str | int
    layer_index: int
    call: int
    method: str
    candidates: list[torch.Tensor] = field(default_factory=list)
    scores: list[torch.Tensor | None] = field(default_factory=list)
    kept: list[torch.Tensor] = field(default_factory=list)

    @property
    def tokens_before(self) -> list[int]:
        return [int(c.numel()) for c in self.candidates]

    @property
    def tokens_after(self) -> list[int]:
        return [int(k.numel()) for k in self.kept]
