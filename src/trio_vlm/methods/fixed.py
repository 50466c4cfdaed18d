"""Methods that make no scoring decision: vanilla (no drop) and a fixed selection (the 'oracle')."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from trio_vlm import presets
from trio_vlm.contract import Selection, StageContext
from trio_vlm.methods.base import TokenMethod


@dataclass(frozen=True, kw_only=True)
class Vanilla(TokenMethod):
    """No pruning: the unmodified model, run and timed through the same hooks as every other method."""

    name: ClassVar[str] = "vanilla"
    display_name: ClassVar[str] = "vanilla"
    paper_name: ClassVar[str | None] = "Vanilla"
    table_order: ClassVar[int] = 0
    modes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def preset(
        cls,
        model: Any = presets.DEFAULT_FAMILY,
        budget: int | None = None,
        mode: str | None = None,
        **overrides: Any,
    ) -> Vanilla:
        """Vanilla at any budget is vanilla (``mode`` must be ``None``)."""
        presets.shape_of(model)
        if mode is not None:
            raise ValueError(f"vanilla has no modes, got {mode!r}")
        return cls(**overrides)

    def select(self, ctx: StageContext) -> Selection:  # pragma: no cover - never called without stages
        raise RuntimeError("Vanilla has no stages")


@dataclass(frozen=True, kw_only=True)
class FixedSelection(TokenMethod):
    """Keep given original visual-token indices at each stage, at zero selection cost.

    ``kept[s]`` lists, for stage ``s`` (encoder stage first if any, then ``layer_list`` order), the original
    indices of one image's tokens to keep. Used as the *oracle* in efficiency benchmarks (the same per-layer
    token counts as a real method, without its scoring) and in tests.
    """

    layer_list: tuple[int, ...] = ()
    kept: tuple[tuple[int, ...], ...] = ()
    visual_token_num: int | None = None
    position_mode: str | None = None

    name: ClassVar[str] = "fixed"
    display_name: ClassVar[str] = "oracle"

    def __post_init__(self) -> None:
        object.__setattr__(self, "kept", tuple(tuple(int(i) for i in k) for k in self.kept))
        counts = [len(k) for k in self.kept]
        stages = len(tuple(self.layer_list)) + (self.visual_token_num is not None)
        if len(counts) != stages:
            raise ValueError(f"FixedSelection needs one kept list per stage ({stages}), got {len(counts)}")
        if self.visual_token_num is not None and counts[0] != self.visual_token_num:
            raise ValueError("the encoder stage's kept list must have visual_token_num entries")
        super().__post_init__()

    @property
    def image_token_list(self) -> tuple[int, ...]:
        """The LLM stages' counts, read off ``kept``."""
        counts = [len(k) for k in self.kept]
        return tuple(counts[1:] if self.visual_token_num is not None else counts)

    def select(self, ctx: StageContext) -> Selection:
        stage_no = 0 if ctx.stage.is_encoder else ctx.stage.llm_index
        if self.visual_token_num is not None and not ctx.stage.is_encoder:
            stage_no += 1
        want = torch.tensor(self.kept[stage_no], dtype=torch.long)
        kept = []
        for g in ctx.groups:
            local = torch.isin(g.original, want.to(g.original.device)).nonzero().flatten()
            if local.numel() != g.keep:
                raise ValueError(
                    f"FixedSelection {ctx.stage}: {local.numel()} of the listed indices are still present, "
                    f"expected {g.keep}"
                )
            kept.append(local)
        return Selection(
            kept=kept, scores=[torch.zeros(g.size, device=g.original.device) for g in ctx.groups]
        )
