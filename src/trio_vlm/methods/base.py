"""The base class of every method: configuration = the dataclass fields, nothing else.

A method is a frozen, keyword-only dataclass. Its schedule fields (any of :data:`SCHEDULE_FIELDS`) say where it
acts; :meth:`TokenMethod.schedule` derives the :class:`~trio_vlm.schedule.Schedule` from them on every call, so
there is no second copy to go stale. Fields are validated at construction. :meth:`TokenMethod.preset` builds a
method from its published schedule and fits it to a model (:mod:`trio_vlm.presets`). The engine calls
:meth:`TokenMethod.select` at each stage.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from trio_vlm import presets
from trio_vlm.contract import Selection, Stage, StageContext
from trio_vlm.schedule import SCHEDULE_FIELDS, Schedule

#: Position conventions after a drop: renumbered (``"compact"``) or kept (``"original"``); ``None``: the family's.
POSITION_MODES = (None, "compact", "original")
#: Preset modes: LLM stages only (``"wo_ve"``) or an encoder stage in front (``"w_ve"``).
MODES = ("wo_ve", "w_ve")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> None:
    """``ValueError`` unless ``value`` is an integer (not a bool) within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{'' if low is None else low}..{'' if high is None else high}"
        raise ValueError(f"{name} must lie in {bounds}, got {value}")


def check_float(
    name: str, value: Any, low: float | None = None, high: float | None = None, open_low: bool = False
) -> None:
    """``ValueError`` unless ``value`` is a finite number within the bounds (``open_low``: ``> low``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    too_low = low is not None and (value <= low if open_low else value < low)
    if too_low or (high is not None and value > high):
        left = "(" if open_low else "["
        raise ValueError(f"{name} must lie in {left}{low}, {high}], got {value}")


@dataclass(frozen=True, kw_only=True)
class TokenMethod:
    """Base class of all methods (frozen, keyword-only dataclasses).

    Class attributes: ``name`` (registry key), ``display_name`` (tables), ``paper_name`` (the name in the
    paper's table, ``None`` if it is not there), ``table_order`` (row order in tables), ``modes`` (the preset
    modes the method has; ``()``: it takes no mode).

    Subclasses declare their schedule fields and options as dataclass fields, validate them in
    ``__post_init__`` (calling ``super().__post_init__()``), implement :meth:`select`, and give their published
    schedule in :meth:`reference_config`.
    """

    name: ClassVar[str] = "method"
    display_name: ClassVar[str] = "method"
    paper_name: ClassVar[str | None] = None
    table_order: ClassVar[int] = 1000
    modes: ClassVar[tuple[str, ...]] = ("wo_ve",)

    def __post_init__(self) -> None:
        names = {f.name for f in dataclasses.fields(self)}
        for key in ("layer_list", "image_token_list", "image_token_ratio_list"):
            if key in names:
                value = getattr(self, key)
                if isinstance(value, (str, bytes)):
                    raise ValueError(f"{key} must be a list, got the string {value!r}")
                object.__setattr__(self, key, tuple(value) if value is not None else ())
        if "image_token_ratio_list" in names and self.image_token_ratio_list and self.image_token_list:
            default = next(f.default for f in dataclasses.fields(self) if f.name == "image_token_list")
            if tuple(self.image_token_list) != tuple(default):
                raise ValueError(
                    f"give LLM-stage counts either as image_token_list {list(self.image_token_list)} or as "
                    f"image_token_ratio_list {list(self.image_token_ratio_list)}, not both"
                )
            object.__setattr__(self, "image_token_list", ())  # the fractions replace the default counts
        if hasattr(self, "position_mode"):
            check_choice("position_mode", self.position_mode, POSITION_MODES)
        self.schedule()  # validates the schedule fields

    # ---- configuration --------------------------------------------------------------------------------
    def schedule(self) -> Schedule:
        """Where the method acts, derived from its schedule fields (validated)."""
        return Schedule(**{key: getattr(self, key) for key in SCHEDULE_FIELDS if hasattr(self, key)})

    def with_schedule(self, schedule: Schedule) -> TokenMethod:
        """A copy acting where ``schedule`` says (``ValueError`` if the method cannot hold that schedule)."""
        values = {
            "layer_list": schedule.layer_list,
            "image_token_list": schedule.image_token_list,
            "visual_token_num": schedule.visual_token_num,
            "image_token_ratio": schedule.image_token_ratio,
            "image_token_ratio_list": schedule.image_token_ratio_list,
        }
        names = {f.name for f in dataclasses.fields(self)}
        missing = [key for key, value in values.items() if key not in names and value not in (None, ())]
        if missing:
            raise ValueError(f"{type(self).__name__} has no {', '.join(missing)} field(s)")
        return dataclasses.replace(self, **{k: v for k, v in values.items() if k in names})

    def replace(self, **changes: Any) -> TokenMethod:
        """A copy with ``changes`` applied (validated like a new instance)."""
        return dataclasses.replace(self, **changes)

    def position_convention(self) -> str | None:
        """``"compact"``, ``"original"`` or ``None`` (the model family's reference convention)."""
        return getattr(self, "position_mode", None)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: ``{"method": name, <schedule fields>, <every other field>}``."""
        out: dict[str, Any] = {"method": self.name}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, TokenMethod):
                value = value.describe()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    # ---- presets --------------------------------------------------------------------------------------
    @classmethod
    def reference_config(cls, family: str, budget: int, mode: str | None) -> dict[str, Any]:
        """The fields of the method's published (or documented) schedule for an average of ``budget`` visual
        tokens per decoder layer on ``family``'s reference model (:data:`trio_vlm.presets.REFERENCE_SHAPES`).
        :class:`~trio_vlm.presets.NoPreset` (a ``ValueError``) when there is none."""
        raise presets.NoPreset(f"{cls.name} has no presets")

    @classmethod
    def preset(
        cls, model: Any = presets.DEFAULT_FAMILY, budget: int = 64, mode: str | None = None, **overrides: Any
    ) -> TokenMethod:
        """The method at ``budget`` (average visual tokens per decoder layer) for ``model``.

        ``model`` is a family name (its reference model, e.g. ``"llava-1.5"`` = LLaVA-1.5-7B), a
        :class:`~trio_vlm.presets.ModelShape`, a config or a loaded model. The published schedule of the
        family's reference model is fitted to the model's depth and visual tokens by the one rule of
        :func:`trio_vlm.presets.fit`. ``mode``: ``"wo_ve"`` / ``"w_ve"`` where the method has both (``None``:
        its first). ``overrides`` replace fields afterwards (explicit schedule lists win over the preset).
        """
        shape = presets.shape_of(model)
        if mode is not None and mode not in cls.modes:
            raise ValueError(f"{cls.name} has no mode {mode!r}; its modes: {list(cls.modes) or 'none'}")
        mode = mode if mode is not None else (cls.modes[0] if cls.modes else None)
        presets.check_budget(cls.name, budget)
        reference = presets.REFERENCE_SHAPES[shape.family]
        try:
            base = cls.reference_config(shape.family, budget, mode)
        except presets.NoPreset:
            if not reference.variable:
                raise
            # No published schedule for this variable-token family: the LLaVA-1.5 one, as fractions.
            source = presets.REFERENCE_SHAPES[presets.DEFAULT_FAMILY]
            counts = cls.reference_config(source.family, budget, mode)
            base = presets.as_fractions(counts, source.visual)
            reference = presets.ModelShape(shape.family, source.num_layers, None, source.visual)
        options = {k: v for k, v in overrides.items() if k not in SCHEDULE_FIELDS}
        method = presets.fit(cls(**{**base, **options}), reference, shape)
        explicit = {k: v for k, v in overrides.items() if k in SCHEDULE_FIELDS}
        return method.replace(**explicit) if explicit else method

    # ---- the token budget actually spent -------------------------------------------------------------
    def stage_output(self, stage: Stage, keep: int, available: int) -> int:
        """Visual tokens that leave ``stage`` when the schedule keeps ``keep`` of ``available``; methods that
        add tokens (merged clusters) or keep fewer (a quota's arithmetic) say so here."""
        return keep

    def tokens_per_layer(self, num_layers: int, num_visual: int) -> list[int]:
        """Visual tokens entering each decoder layer for one image of ``num_visual`` tokens."""
        schedule = self.schedule()
        current = num_visual
        if schedule.has_encoder_stage:
            current = self.stage_output(Stage.encoder(), schedule.encoder_keep(num_visual), num_visual)
        out: list[int] = []
        drops = dict(zip(schedule.layer_list, range(len(schedule.layer_list))))
        for layer in range(num_layers):
            if layer in drops:
                stage = Stage(layer, drops[layer])
                current = self.stage_output(stage, schedule.llm_keep(drops[layer], current), current)
            out.append(current)
        return out

    def average_tokens(self, num_layers: int, num_visual: int) -> float:
        """Average visual tokens per decoder layer (the budget the paper reports), for one image."""
        return sum(self.tokens_per_layer(num_layers, num_visual)) / num_layers

    # ---- what the engine calls ------------------------------------------------------------------------
    def cls_attention_layers(self) -> tuple[int, ...]:
        """Vision-encoder layer indices (negatives allowed) whose [CLS] attention rows the encoder stage reads;
        the engine recomputes just those rows so the encoder keeps its fast attention kernel."""
        return ()

    def vision_layer_inputs(self) -> tuple[int, ...]:
        """Vision-encoder layer indices whose *input* hidden states (n_images, 1 + N, D_vision) the encoder
        stage reads (e.g. to recompute keys); index ``-1`` gives the output of layer ``-2``."""
        return ()

    def causal_after_drop(self, family: str) -> bool:
        """Whether the prefill layers after an LLM stage attend causally on model ``family`` (every model's own
        rule, the default). ``False`` reproduces code that loses the causal mask there: those layers then see
        every real token of the pruned prompt (sdpa and eager attention; FlashAttention stays causal). The
        stage itself still gets the causal mask in :attr:`StageContext.layer_kwargs`."""
        return True

    def select(self, ctx: StageContext) -> Selection:
        raise NotImplementedError(f"{type(self).__name__} does not implement select()")


@dataclass(frozen=True, kw_only=True)
class LLMStages(TokenMethod):
    """Schedule fields of a method that drops inside the LLM: counts or fractions after given layers."""

    layer_list: tuple[int, ...] = ()
    image_token_list: tuple[int, ...] = ()
    image_token_ratio_list: tuple[float, ...] = ()


@dataclass(frozen=True, kw_only=True)
class EncoderStage(TokenMethod):
    """Schedule fields of a method that drops once, after the vision encoder + projector."""

    visual_token_num: int | None = 64
    image_token_ratio: float | None = None

    modes: ClassVar[tuple[str, ...]] = ("w_ve",)

    def __post_init__(self) -> None:
        if self.image_token_ratio is not None and self.visual_token_num == 64:
            object.__setattr__(self, "visual_token_num", None)  # the fraction replaces the default count
        if self.visual_token_num is None and self.image_token_ratio is None:
            raise ValueError(
                f"{self.name} needs visual_token_num (or image_token_ratio): tokens kept per image"
            )
        super().__post_init__()
