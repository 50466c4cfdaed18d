"""Methods that make no scoring decision: vanilla (no drop) and a fixed selection (the 'oracle')."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from trio_vlm.methods.base import Selection, StageContext, TokenMethod
from trio_vlm.schedule import Schedule


@dataclass
class Vanilla(TokenMethod):
    """No pruning; the engine only times prefill. The baseline of every comparison."""

    name: ClassVar[str] = "vanilla"

    @classmethod
    def preset(cls, family: str, budget: int | None = None, mode: str | None = None, **overrides) -> Vanilla:
        return cls(**overrides)

    def schedule(self) -> Schedule:
        return Schedule()

    def select(self, ctx: StageContext) -> Selection:  # pragma: no cover - never called without stages
        raise RuntimeError("Vanilla has no stages")


@dataclass
class FixedSelection(TokenMethod):
    """Keep given original visual-token indices at each stage, at zero selection cost.

    ``kept[s]`` lists, for stage ``s`` (encoder stage first if any, then ``layer_list`` order), the original
    indices of one image's tokens to keep. Used as the *oracle* in efficiency benchmarks (the same per-layer
    token counts as a real method, without its scoring) and in tests.
    """

    layer_list: tuple[int, ...] = ()
    kept: tuple[tuple[int, ...], ...] = ()
    visual_token_num: int | None = None
    positions: str | None = None
    _tensors: dict = field(default_factory=dict, repr=False)

    name: ClassVar[str] = "fixed"

    def __post_init__(self) -> None:
        counts = [len(k) for k in self.kept]
        stages = len(self.layer_list) + (self.visual_token_num is not None)
        if len(counts) != stages:
            raise ValueError(f"FixedSelection needs one kept list per stage ({stages}), got {len(counts)}")
        if self.visual_token_num is not None and counts[0] != self.visual_token_num:
            raise ValueError("the encoder stage's kept list must have visual_token_num entries")
        llm_counts = counts[1:] if self.visual_token_num is not None else counts
        self._schedule = Schedule(self.layer_list, tuple(llm_counts), self.visual_token_num)

    def select(self, ctx: StageContext) -> Selection:
        stage_no = 0 if ctx.stage == "encoder" else self._schedule.layer_list.index(ctx.stage)
        if self._schedule.has_encoder_stage and ctx.stage != "encoder":
            stage_no += 1
        want = torch.tensor(self.kept[stage_no], dtype=torch.long)
        kept = []
        for g in ctx.groups:
            local = torch.isin(g.original, want.to(g.original.device)).nonzero().flatten()
            if local.numel() != g.keep:
                raise ValueError(
                    f"FixedSelection stage {ctx.stage}: {local.numel()} of the listed indices are still present, "
                    f"expected {g.keep}"
                )
            kept.append(local)
        return Selection(
            kept=kept, scores=[torch.zeros(g.size, device=g.original.device) for g in ctx.groups]
        )
