"""Shared checks and arithmetic for the baselines' ``preset`` classmethods (LLaVA-1.5-7B numbers)."""

from __future__ import annotations

#: Model families the baseline presets are written for, with (decoder layers, visual tokens per image).
FAMILIES: dict[str, tuple[int, int]] = {"llava-1.5": (32, 576)}


def family_shape(method: str, family: str) -> tuple[int, int]:
    """(decoder layers, visual tokens per image) of ``family``; ``ValueError`` if there is no preset for it."""
    if family not in FAMILIES:
        raise ValueError(f"no {method} preset for model family {family!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[family]


def check_llm_mode(method: str, mode: str | None) -> None:
    """LLM-side methods have no encoder stage: accept ``None`` or ``"wo_ve"`` only."""
    if mode not in (None, "wo_ve"):
        raise ValueError(f"{method} acts inside the LLM only: mode must be None or 'wo_ve', got {mode!r}")


def check_budget(method: str, budget: int, num_visual: int) -> int:
    """``budget`` as an int in 1..``num_visual``, else ``ValueError``."""
    if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= num_visual:
        raise ValueError(f"{method} budget must be an integer in 1..{num_visual}, got {budget!r}")
    return budget


def single_drop_keep(budget: int, layer: int, num_layers: int, num_visual: int) -> int:
    """Tokens one drop after ``layer`` layers must keep so the ``num_layers``-layer average is ``budget``
    (rounded to the nearest integer; ``ValueError`` when no count in 1..num_visual gets there)."""
    keep = round((num_layers * budget - layer * num_visual) / (num_layers - layer))
    if not 1 <= keep <= num_visual:
        raise ValueError(
            f"an average of {budget} visual tokens is out of reach with one drop after layer {layer} "
            f"({num_layers} layers, {num_visual} tokens)"
        )
    return keep


def no_encoder_stage(method: str, visual_token_num: int | None) -> None:
    if visual_token_num is not None:
        raise ValueError(
            f"{method} has no encoder stage: visual_token_num must be None, got {visual_token_num}"
        )


def check_positions(positions: str | None) -> None:
    if positions not in (None, "compact", "original"):
        raise ValueError(f"positions must be None, 'compact' or 'original', got {positions!r}")
