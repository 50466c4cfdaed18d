"""Shared plumbing of the methods that drop visual tokens once, before the first decoder layer."""

from __future__ import annotations

from dataclasses import dataclass

from trio_vlm.methods.base import TokenMethod
from trio_vlm.schedule import Schedule

#: Model families the encoder-side presets are written for, with their visual tokens per image.
PRESET_FAMILIES = {"llava-1.5": 576}


@dataclass
class EncoderStageMethod(TokenMethod):
    """A method with one encoder stage keeping ``visual_token_num`` tokens per image and no LLM stages.

    ``positions``: ``None`` (the family's convention; contiguous for LLaVA, as in the official code),
    ``"compact"`` or ``"original"``. ``layer_list``/``image_token_list`` exist so every method shares the
    schedule fields (CLI lists, preset scaling) and must stay empty: compose with an LLM-side method via
    :class:`~trio_vlm.methods.compose.Compose` for LLM stages.
    """

    visual_token_num: int = 64
    positions: str | None = None
    layer_list: tuple[int, ...] = ()
    image_token_list: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if tuple(self.layer_list) or tuple(self.image_token_list):
            raise ValueError(
                f"{self.name} acts at the encoder stage only: layer_list and image_token_list must be empty, got "
                f"{list(self.layer_list)} and {list(self.image_token_list)} (use Compose for LLM stages)"
            )
        if self.visual_token_num is None:
            raise ValueError(
                f"{self.name} needs visual_token_num (tokens per image kept at the encoder stage)"
            )
        self.layer_list, self.image_token_list = (), ()
        self._schedule = Schedule(visual_token_num=self.visual_token_num)
        if self.positions not in (None, "compact", "original"):
            raise ValueError(f"positions must be None, 'compact' or 'original', got {self.positions!r}")


def check_preset(method: str, family: str, budget: int, mode: str | None) -> None:
    """``ValueError`` unless ``family``/``budget``/``mode`` name an encoder-side preset."""
    if family not in PRESET_FAMILIES:
        raise ValueError(f"no {method} preset for family {family!r}; known: {', '.join(PRESET_FAMILIES)}")
    limit = PRESET_FAMILIES[family]
    if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= limit:
        raise ValueError(f"{method} preset budget must be an integer in 1..{limit}, got {budget!r}")
    if mode is not None:
        raise ValueError(f"{method} has a single encoder stage and no modes, got mode={mode!r}")
