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
    """Keep given original visual-token indices at each stage, at zero selection cost (the *oracle*).

    ``kept[s]`` lists, for stage ``s`` (the encoder stage first when ``encoder``, then ``layer_list`` order), the
    original indices of one image's tokens to keep; every image keeps those of its tokens that are listed (so a
    tile, or a stage that kept fewer than its schedule's count, is reproduced exactly). Used in efficiency
    benchmarks (the same per-layer tokens as a real method, without its scoring) and in tests.
    """

    layer_list: tuple[int, ...] = ()
    kept: tuple[tuple[int, ...], ...] = ()
    encoder: bool = False
    position_mode: str | None = None

    name: ClassVar[str] = "fixed"
    display_name: ClassVar[str] = "oracle"

    def __post_init__(self) -> None:
        object.__setattr__(self, "kept", tuple(tuple(int(i) for i in k) for k in self.kept))
        stages = len(tuple(self.layer_list)) + int(self.encoder)
        if len(self.kept) != stages:
            raise ValueError(f"FixedSelection needs one kept list per stage ({stages}), got {len(self.kept)}")
        if any(not k for k in self.kept):
            raise ValueError("FixedSelection: every stage must keep at least one token")
        super().__post_init__()

    @property
    def visual_token_num(self) -> int | None:
        """The encoder stage's count, read off ``kept``."""
        return len(self.kept[0]) if self.encoder else None

    @property
    def image_token_list(self) -> tuple[int, ...]:
        """The LLM stages' counts, read off ``kept``."""
        counts = [len(k) for k in self.kept[int(self.encoder) :]]
        return tuple(min(c, min(counts[: i + 1])) for i, c in enumerate(counts))

    def select(self, ctx: StageContext) -> Selection:
        stage_no = 0 if ctx.stage.is_encoder else ctx.stage.llm_index + int(self.encoder)
        want = torch.tensor(self.kept[stage_no], dtype=torch.long)
        kept = [torch.isin(g.original, want.to(g.original.device)).nonzero().flatten() for g in ctx.groups]
        if any(k.numel() == 0 for k in kept):
            raise ValueError(f"FixedSelection {ctx.stage}: none of an image's listed tokens is still present")
        return Selection(
            kept=kept, scores=[torch.zeros(g.size, device=g.original.device) for g in ctx.groups]
        )
