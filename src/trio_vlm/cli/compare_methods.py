"""Which methods ``trio-vlm compare`` runs: registry look-up, presets, scaling to small models, composition."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from trio_vlm.cli.schedule_args import PRESET_VISUAL_TOKENS, scale_schedule
from trio_vlm.methods.base import TokenMethod
from trio_vlm.methods.compose import Compose
from trio_vlm.methods.registry import available_methods, method_class

logger = logging.getLogger(__name__)

#: Registry names that are not pruning methods to compare (the baseline row is always added).
BASELINE = "vanilla"


@dataclass
class Candidate:
    """One row of the comparison: a method to run, or the reason it cannot run (``skipped``)."""

    label: str
    method: TokenMethod | None
    skipped: str | None = None


def selected_names(spec: str) -> list[str]:
    """``"all"`` → every registered method; else a comma-separated list, validated against the registry."""
    if spec.strip().lower() == "all":
        names = available_methods()
    else:
        names = [n.strip().lower() for n in spec.split(",") if n.strip()]
        if not names:
            raise ValueError(f"--methods must be 'all' or a comma-separated list of names, got {spec!r}")
        for name in names:
            method_class(name)  # ValueError naming the unknown method and the available ones
    return [n for n in dict.fromkeys(names) if n != BASELINE]


def _field_names(method: TokenMethod) -> set[str]:
    return {f.name for f in dataclasses.fields(method)} if dataclasses.is_dataclass(method) else set()


def scale_method(method: TokenMethod, num_layers: int, num_visual: int) -> TokenMethod:
    """Shrink a LLaVA-1.5 preset to a model with ``num_layers`` decoder layers and ``num_visual`` tokens.

    Methods with the schedule fields (``layer_list``, ``image_token_list``, ``visual_token_num``) scale with the
    CLI's rule; ``Compose`` scales both parts. Anything else is returned as is.
    """
    if isinstance(method, Compose):
        return Compose(
            scale_method(method.encoder, num_layers, num_visual),
            scale_method(method.llm, num_layers, num_visual),
            method.positions,
        )
    if {"layer_list", "image_token_list", "visual_token_num"} <= _field_names(method):
        return scale_schedule(method, num_layers, num_visual)
    logger.warning("do not know how to scale %s to the model; running its preset unchanged", method.name)
    return method


def build_candidates(
    names: list[str],
    family: str,
    budget: int,
    *,
    encoder_method: str | None = None,
    encoder_tokens: int | None = None,
    scale_to: tuple[int, int] | None = None,
) -> list[Candidate]:
    """Each method's ``family``/``budget`` preset (scaled to ``scale_to=(layers, tokens)`` if given).

    With ``encoder_method``, every method with LLM stages and no encoder stage runs after that method's
    encoder stage (its ``encoder_tokens`` preset, default ``2·budget``), as ``Compose(encoder, method)``.
    A method without a usable preset becomes a skipped row rather than an error.
    """
    encoder = None
    if encoder_method is not None:
        tokens = encoder_tokens if encoder_tokens is not None else min(2 * budget, PRESET_VISUAL_TOKENS)
        encoder = method_class(encoder_method).preset(family, tokens)
        if not encoder.schedule().has_encoder_stage:
            raise ValueError(f"--encoder-method {encoder_method} has no encoder stage")
        if scale_to is not None:
            encoder = scale_method(encoder, *scale_to)
    out = []
    for name in names:
        cls = method_class(name)
        if not callable(getattr(cls, "preset", None)):
            out.append(Candidate(name, None, "no preset"))
            continue
        try:
            method = cls.preset(family, budget)
            if scale_to is not None:
                method = scale_method(method, *scale_to)
            schedule = method.schedule()
            if encoder is not None and schedule.layer_list and not schedule.has_encoder_stage:
                method = Compose(encoder, method)
        except (TypeError, ValueError) as exc:
            out.append(Candidate(name, None, str(exc)))
            continue
        out.append(Candidate(method.name, method))
    return out
