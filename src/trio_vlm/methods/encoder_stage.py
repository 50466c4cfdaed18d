"""What the methods that drop once, after the vision encoder + projector, share: their schedule and presets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from trio_vlm import presets
from trio_vlm.methods.base import EncoderStage


@dataclass(frozen=True, kw_only=True)
class EncoderStageMethod(EncoderStage):
    """A method with one encoder stage keeping ``visual_token_num`` tokens per image (or the fraction
    ``image_token_ratio``) and no LLM stages; compose it with an LLM-side method via
    :class:`~trio_vlm.methods.compose.Compose` for those.

    ``position_mode``: ``None`` (the family's convention; contiguous for LLaVA, as in the official code),
    ``"compact"`` or ``"original"``.
    """

    position_mode: str | None = None

    modes: ClassVar[tuple[str, ...]] = ("w_ve",)

    @classmethod
    def reference_config(cls, family: str, budget: int, mode: str | None) -> dict[str, Any]:
        """``budget`` tokens per image on LLaVA-1.5 (the encoder stage is the whole schedule, so the count is
        the per-layer average)."""
        if family != presets.DEFAULT_FAMILY:
            raise presets.NoPreset(f"no published {cls.display_name} count for {family}")
        return {"visual_token_num": budget}
