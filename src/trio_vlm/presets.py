"""Model shapes and the one rule that fits a method's published schedule to any model.

Every entry point (the Python API, ``answer``, ``answer-file``, ``compare``, ``eval``, ``profile``,
``testbed-eval``, ``demo``, the lmms-eval plugin) builds methods through ``Method.preset(model, budget, mode)``,
which takes the method's published schedule for the family's reference model (:data:`REFERENCE_SHAPES`) and
hands it to :func:`fit`.

**The rule.** A budget is the average number of visual tokens per decoder layer (the paper's arithmetic,
counting every token a stage really leaves, merged clusters included). To move a schedule from the reference
model (``L_ref`` layers, ``V_ref`` visual tokens per image) to a model with ``L`` layers and ``V`` tokens:

1. the same shape is left exactly as published;
2. each drop after ``l`` layers moves to ``round(l · L / L_ref)`` (at least 1, strictly increasing, at most
   ``L - 1``; if that leaves the target out of reach, ``floor`` instead);
3. the target average is the reference average scaled by ``V / V_ref`` (the same share of the visual tokens);
4. an encoder-stage count becomes ``round(count · V / V_ref)``; fractions stay;
5. the LLM-stage counts (or fractions) are the published ones times one common factor, then nudged one at a
   time while that brings the average closer: the result is the nearest reachable average along that shape.

Families whose images have a variable number of tokens (LLaVA-NeXT, Qwen2.5-VL) use fractions; methods with
no published schedule there take their LLaVA-1.5 schedule as fractions (:func:`as_fractions`).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

from trio_vlm.schedule import SCHEDULE_FIELDS, Schedule

logger = logging.getLogger(__name__)

DEFAULT_FAMILY = "llava-1.5"
DEFAULT_BUDGET = 64
#: The paper's budgets (average visual tokens per decoder layer on LLaVA-1.5-7B).
PAPER_BUDGETS = (192, 128, 64)


class NoPreset(ValueError):
    """A method has no published schedule for a family (or budget, or mode)."""


@dataclass(frozen=True)
class ModelShape:
    """What a preset depends on: the family, the decoder depth and the visual tokens per image (``None``:
    variable, e.g. any-resolution crops; ``nominal_visual`` is then a typical count used for averages)."""

    family: str
    num_layers: int
    visual_tokens: int | None
    nominal_visual: int

    @property
    def visual(self) -> int:
        """Visual tokens per image used in averages."""
        return self.visual_tokens if self.visual_tokens is not None else self.nominal_visual

    @property
    def variable(self) -> bool:
        return self.visual_tokens is None


#: The one table of model shapes: each family's reference model, the model its presets are published for.
#: LLaVA-1.5-7B (Vicuna-7B, CLIP-336/14: 576 tokens); LLaVA-NeXT-7B (32 layers, up to 5 tiles × 576 tokens);
#: Qwen2.5-VL-7B (28 layers; 1008×1008 images in the TRIO reference evaluation: 1296 tokens).
REFERENCE_SHAPES: dict[str, ModelShape] = {
    "llava-1.5": ModelShape("llava-1.5", 32, 576, 576),
    "llava-next": ModelShape("llava-next", 32, None, 2880),
    "qwen2.5-vl": ModelShape("qwen2.5-vl", 28, None, 1296),
}
#: Checkpoint architectures (``config.architectures``) and model types of each family.
ARCHITECTURES: dict[str, str] = {
    "LlavaForConditionalGeneration": "llava-1.5",
    "LlavaNextForConditionalGeneration": "llava-next",
    "Qwen2_5_VLForConditionalGeneration": "qwen2.5-vl",
}
MODEL_TYPES: dict[str, str] = {"llava": "llava-1.5", "llava_next": "llava-next", "qwen2_5_vl": "qwen2.5-vl"}


def family_of_config(config: Any) -> str:
    """The family of a checkpoint config (``ValueError`` naming its architecture if unsupported)."""
    for arch in getattr(config, "architectures", None) or []:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    model_type = getattr(config, "model_type", None)
    if model_type in MODEL_TYPES:
        return MODEL_TYPES[model_type]
    found = ", ".join(getattr(config, "architectures", None) or []) or f"model_type={model_type!r}"
    raise ValueError(f"unsupported model architecture {found}; supported: {', '.join(ARCHITECTURES)}")


def shape_of_config(config: Any, family: str | None = None) -> ModelShape:
    """The :class:`ModelShape` of a checkpoint config (LLaVA-1.5: ``image_seq_length`` tokens per image)."""
    family = family or family_of_config(config)
    text = getattr(config, "text_config", None) or config
    layers = int(text.num_hidden_layers)
    reference = REFERENCE_SHAPES[family]
    if reference.variable:
        return ModelShape(family, layers, None, reference.nominal_visual)
    visual = getattr(config, "image_seq_length", None)
    if visual is None:
        raise ValueError(f"the {family} config has no image_seq_length (visual tokens per image)")
    return ModelShape(family, layers, int(visual), int(visual))


def shape_of(model: Any) -> ModelShape:
    """A :class:`ModelShape` from a family name (its reference model), a shape, a config or a loaded model."""
    if isinstance(model, ModelShape):
        return model
    if isinstance(model, str):
        if model not in REFERENCE_SHAPES:
            raise ValueError(f"unknown model family {model!r}; known: {', '.join(REFERENCE_SHAPES)}")
        return REFERENCE_SHAPES[model]
    config = getattr(model, "config", None)
    if config is not None and hasattr(model, "forward"):  # a loaded model: its class decides the family
        name = type(model).__name__
        return shape_of_config(config, ARCHITECTURES.get(name))
    if hasattr(model, "to_dict"):  # a transformers config
        return shape_of_config(model)
    raise ValueError(f"cannot tell the model shape of {type(model).__name__}; give a family name or a model")


def check_budget(method: str, budget: Any) -> int:
    """``budget`` as a positive integer, else ``ValueError`` naming the method."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(
            f"{method} budget must be a positive integer (average visual tokens per layer), got {budget!r}"
        )
    return budget


# ---- the rule -----------------------------------------------------------------------------------------


def _scaled_layers(
    layers: tuple[int, ...], source: int, target: int, rounding: Any
) -> tuple[int, ...] | None:
    out: list[int] = []
    for layer in layers:
        out.append(max(int(rounding(layer * target / source)), out[-1] + 1 if out else 1))
    return tuple(out) if not out or out[-1] < target else None


@dataclass(frozen=True)
class _Shape:
    """A schedule's shape to fit: where the drops are, the published LLM counts or fractions, the encoder."""

    layers: tuple[int, ...]
    counts: tuple[int, ...]
    ratios: tuple[float, ...]
    encoder: int | None
    encoder_ratio: float | None

    def schedule(self, factor: float, cap: int) -> Schedule:
        counts: list[int] = []
        for count in self.counts:
            counts.append(max(1, min(counts[-1] if counts else cap, round(count * factor))))
        ratios = [min(1.0, max(1e-4, round(r * factor, 4))) for r in self.ratios]
        return self.with_counts(counts, ratios)

    def with_counts(self, counts: list[int], ratios: list[float]) -> Schedule:
        return Schedule(
            layer_list=self.layers,
            image_token_list=tuple(counts),
            visual_token_num=self.encoder,
            image_token_ratio=self.encoder_ratio,
            image_token_ratio_list=tuple(ratios),
        )


def _fit_llm(method: Any, shape: _Shape, model: ModelShape, target: float) -> tuple[Any, float]:
    """The method on ``shape`` with its LLM counts (or fractions) fitted to the average ``target`` on ``model``;
    returns (method, its average)."""
    layers, visual = model.num_layers, model.visual

    def average(candidate: Any) -> float:
        return candidate.average_tokens(layers, visual)

    cap = visual if shape.encoder is None else min(shape.encoder, visual)

    def at(factor: float) -> Any:
        return method.with_schedule(shape.schedule(factor, cap))

    high = float(visual) if shape.counts else 1.0 / min(shape.ratios)
    low = 0.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if average(at(mid)) < target else (low, mid)
    best = min((at(low), at(high)), key=lambda m: abs(average(m) - target))
    if not shape.counts:
        return best, average(best)
    counts = list(best.schedule().image_token_list)
    error = abs(average(best) - target)
    # Local search around the factor's counts (every combination of small steps), so the average is the
    # nearest reachable one; among equally near ones, the counts closest to the factor's.
    reach = 3 if len(counts) <= 3 else 1
    best_key = (error, 0)
    for delta in itertools.product(range(-reach, reach + 1), repeat=len(counts)):
        trial = [c + d for c, d in zip(counts, delta)]
        if any(not 1 <= c <= (trial[k - 1] if k else cap) for k, c in enumerate(trial)):
            continue
        candidate = method.with_schedule(shape.with_counts(trial, []))
        key = (round(abs(average(candidate) - target), 9), sum(abs(d) for d in delta))
        if key < best_key:
            best, best_key = candidate, key
    return best, average(best)


def _shape_of_schedule(schedule: Schedule, layers: tuple[int, ...], encoder: int | None) -> _Shape:
    return _Shape(
        layers,
        schedule.image_token_list,
        schedule.image_token_ratio_list,
        encoder,
        schedule.image_token_ratio,
    )


def fit(method: Any, source: ModelShape, target: ModelShape) -> Any:
    """``method`` (written for ``source``) fitted to ``target`` by the rule in this module's docstring."""
    schedule = method.schedule()
    if source.num_layers == target.num_layers and source.visual == target.visual:
        return method
    if not schedule.layer_list and not schedule.has_encoder_stage:
        return method
    wanted = method.average_tokens(source.num_layers, source.visual) * target.visual / source.visual
    encoder = schedule.visual_token_num
    if encoder is not None:
        encoder = max(1, round(encoder * target.visual / source.visual))
    if not schedule.layer_list:
        return method.with_schedule(_shape_of_schedule(schedule, (), encoder).with_counts([], []))
    results = []
    for rounding in (round, math.floor):
        layers = _scaled_layers(schedule.layer_list, source.num_layers, target.num_layers, rounding)
        if layers is not None:
            results.append(_fit_llm(method, _shape_of_schedule(schedule, layers, encoder), target, wanted))
    if not results:
        raise ValueError(
            f"cannot fit layer_list {list(schedule.layer_list)} of a {source.num_layers}-layer model into "
            f"{target.num_layers} decoder layers"
        )
    fitted, average = min(results, key=lambda r: abs(r[1] - wanted))
    if abs(average - wanted) > max(1.0, 0.02 * wanted):
        logger.warning(
            "%s: an average of %.1f visual tokens per layer is out of reach on a %d-layer model with %d visual "
            "tokens; the nearest reachable is %.1f",
            getattr(method, "name", type(method).__name__),
            wanted,
            target.num_layers,
            target.visual,
            average,
        )
    return fitted


def as_fractions(config: dict[str, Any], num_visual: int) -> dict[str, Any]:
    """A count schedule (``config`` fields) as fractions of the tokens each stage receives, for families with
    a variable number of visual tokens: ``visual_token_num / N`` and ``count_i / count_{i-1}``."""
    out = dict(config)
    encoder = out.pop("visual_token_num", None)
    counts = tuple(out.pop("image_token_list", ()) or ())
    if encoder is not None:
        out["image_token_ratio"] = round(encoder / num_visual, 4)
    previous = encoder if encoder is not None else num_visual
    ratios = []
    for count in counts:
        ratios.append(round(min(count, previous) / previous, 4))
        previous = min(count, previous)
    if counts:
        out["image_token_ratio_list"] = tuple(ratios)
    return out


def published(table: dict[Any, Any], family: str, budget: int, mode: str | None, method: str) -> Any:
    """``table[(family, budget, mode)]`` or :class:`NoPreset` naming what exists."""
    key = (family, budget, mode)
    if key not in table:
        known = sorted({f"{f} budget={b}" + (f" mode={m}" if m else "") for f, b, m in table})
        raise NoPreset(
            f"no {method} preset for {family} budget={budget}"
            + (f" mode={mode}" if mode else "")
            + f"; published: {', '.join(known)}"
        )
    return table[key]


def nearest_budget(table: dict[Any, Any], family: str, budget: int, mode: str | None) -> int | None:
    """The published budget of ``family``/``mode`` closest to ``budget`` (``None`` if there is none)."""
    budgets = [b for f, b, m in table if f == family and m == mode]
    return min(budgets, key=lambda b: (abs(b - budget), b)) if budgets else None


def at_budget(method: Any, shape: ModelShape, budget: float) -> Any:
    """``method`` (a published schedule for ``shape``) moved to another budget on the same model: the encoder
    count scaled by ``budget`` / its average, the LLM counts fitted by step 5 of the rule."""
    schedule = method.schedule()
    current = method.average_tokens(shape.num_layers, shape.visual)
    encoder = schedule.visual_token_num
    if encoder is not None:
        encoder = max(1, min(shape.visual, round(encoder * budget / current)))
    moved = _shape_of_schedule(schedule, schedule.layer_list, encoder)
    if not schedule.layer_list:
        return method.with_schedule(moved.with_counts([], []))
    return _fit_llm(method, moved, shape, float(budget))[0]


def published_schedule(
    cls: Any,
    table: dict[Any, dict[str, Any]],
    family: str,
    budget: int,
    mode: str | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A method's fields from its ``table`` of published schedules ``(family, budget, mode) -> fields`` (plus
    ``extra`` fields): the one at ``budget``, or the nearest budget's moved to ``budget`` (:func:`at_budget`)."""
    nearest = nearest_budget(table, family, budget, mode)
    if nearest is None:
        published(table, family, budget, mode, cls.display_name)  # raises NoPreset naming what exists
    config = {**(extra or {}), **table[(family, nearest, mode)]}
    if nearest == budget:
        return config
    moved = at_budget(cls(**config), REFERENCE_SHAPES[family], budget)
    return {**config, **{k: getattr(moved, k) for k in SCHEDULE_FIELDS if hasattr(moved, k)}}
