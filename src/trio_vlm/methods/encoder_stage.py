"""Shared plumbing of the methods that drop visual tokens once, before the first decoder layer."""

from __future__ import annotations

from dataclasses import dataclass

from trio_vlm.methods.base import TokenMethod
from trio_vlm.schedule import Schedule

#: Model families the encoder-side presets are written for.
PRESET_FAMILIES = ("llava-1.5",)


@dataclass
class EncoderStageMethod(TokenMethod):
    """A method with one encoder stage keeping ``visual_token_num`` tokens per image and no LLM stages.

    ``positions``: ``None`` (the family's convention; contiguous for LLaVA, as in the official code),
    ``"compact"`` or ``"original"``.
    """

    visual_token_num: int = 64
    positions: str | None = None

    def __post_init__(self) -> None:
        self._schedule = Schedule(visual_token_num=self.visual_token_num)
        if self.positions not in (None, "compact", "original"):
            raise ValueError(f"positions must be None, 'compact' or 'original', got {self.positions!r}")

    def schedule(self) -> Schedule:
        return self._schedule

    @property
    def position_mode(self) -> str | None:
        return self.positions


def check_preset(method: str, family: str, budget: int, mode: str | None) -> None:
    """``ValueError`` unless ``family``/``budget``/``mode`` name an encoder-side preset."""
    if family not in PRESET_FAMILIES:
        raise ValueError(f"no {method} preset for family {family!r}; known: {', '.join(PRESET_FAMILIES)}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"{method} preset budget must be a positive integer, got {budget!r}")
    if mode is not None:
        raise ValueError(f"{method} has a single encoder stage and no modes, got mode={mode!r}")
