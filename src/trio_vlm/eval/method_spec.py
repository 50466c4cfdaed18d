"""Turn ``--method/--budget/--mode`` into a method via the registry, fitted to the evaluated model."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from trio_vlm.methods.base import TokenMethod
from trio_vlm.methods.registry import available_methods, method_class

logger = logging.getLogger(__name__)

VANILLA = "vanilla"
# Decoder layers and visual tokens per image that each family's presets are written for.
FAMILY_SHAPES = {"llava-1.5": (32, 576)}
PAPER_NAMES = {
    "vanilla": "Vanilla",
    "fastv": "FastV",
    "pdrop": "PDrop",
    "sparsevlm": "SparseVLM",
    "dart": "DART",
    "trio": "TRIO (Ours)",
    "visionzip": "VisionZip",
    "holov": "HoloV",
    "scope": "SCOPE",
}


def known_methods() -> list[str]:
    return sorted({VANILLA, *available_methods()})


def _scaled(count: int, ratio: float) -> int:
    return max(1, round(count * ratio))


def scale_to_model(method: TokenMethod, family: str, num_layers: int, num_visual: int) -> TokenMethod:
    """A preset written for ``family`` shrunk to a smaller model (the bundled tiny one): the same relative
    drop depths and kept-token fractions. Only the schedule fields the method has are replaced."""
    base_layers, base_visual = FAMILY_SHAPES[family]
    schedule = method.schedule()
    layers: list[int] = []
    for layer in schedule.layer_list:
        layers.append(max(round(layer * num_layers / base_layers), layers[-1] + 1 if layers else 1))
    if layers and layers[-1] >= num_layers:
        raise ValueError(
            f"cannot fit layer_list {list(schedule.layer_list)} into {num_layers} decoder layers"
        )
    ratio = num_visual / base_visual
    changes: dict[str, Any] = {}
    if schedule.layer_list:
        changes["layer_list"] = tuple(layers)
        changes["image_token_list"] = tuple(_scaled(c, ratio) for c in schedule.image_token_list)
    if schedule.visual_token_num is not None:
        changes["visual_token_num"] = _scaled(schedule.visual_token_num, ratio)
    fields = {f.name for f in dataclasses.fields(method)} if dataclasses.is_dataclass(method) else set()
    absent = sorted(set(changes) - fields)
    if absent:
        raise ValueError(
            f"cannot scale the {type(method).__name__} preset to a {num_layers}-layer model with {num_visual} "
            f"visual tokens: it has no {', '.join(absent)} field(s)"
        )
    return dataclasses.replace(method, **changes)


@dataclass(frozen=True)
class MethodSpec:
    """A method by registry name (``"vanilla"``: the unmodified model) at a preset budget and mode."""

    name: str
    budget: int | None = None
    mode: str | None = None
    family: str = "llava-1.5"

    def __post_init__(self) -> None:
        if self.name.lower() not in known_methods():
            raise ValueError(f"unknown method {self.name!r}; available: {', '.join(known_methods())}")
        if self.is_vanilla and (self.budget is not None or self.mode is not None):
            raise ValueError("--method vanilla takes no --budget or --mode (it prunes nothing)")
        if not self.is_vanilla and self.budget is None:
            raise ValueError(f"--method {self.name} needs --budget (average visual tokens per layer)")
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"--budget must be >= 1, got {self.budget}")
        if self.mode not in (None, "w_ve", "wo_ve"):
            raise ValueError(f"--mode must be 'w_ve' or 'wo_ve', got {self.mode!r}")
        if self.family not in FAMILY_SHAPES:
            raise ValueError(f"unknown preset family {self.family!r}; known: {sorted(FAMILY_SHAPES)}")

    @property
    def is_vanilla(self) -> bool:
        return self.name.lower() == VANILLA

    def build(self, num_layers: int, num_visual: int) -> TokenMethod | None:
        """The method for a model with ``num_layers`` decoder layers and ``num_visual`` tokens per image
        (``None`` for vanilla); presets are scaled when the model's visual tokens differ from the family's."""
        if self.is_vanilla:
            return None
        cls = method_class(self.name)
        kwargs = {} if self.mode is None else {"mode": self.mode}
        method = cls.preset(self.family, self.budget, **kwargs)
        if num_visual != FAMILY_SHAPES[self.family][1]:
            logger.warning(
                "scaling the %s preset to a model with %d layers and %d visual tokens",
                self.name,
                num_layers,
                num_visual,
            )
            method = scale_to_model(method, self.family, num_layers, num_visual)
        method.schedule().validate(num_layers)
        return method

    def setting(self, method: TokenMethod | None, num_visual: int) -> str:
        """The paper's row group: ``"Upper Bound (576)"``, ``"w/o VE (64)"`` or ``"w/ VE (64)"``."""
        if method is None:
            return f"Upper Bound ({num_visual})"
        encoder = method.schedule().has_encoder_stage
        return f"{'w/ VE' if encoder else 'w/o VE'} ({self.budget})"

    @property
    def paper_name(self) -> str:
        return PAPER_NAMES.get(self.name.lower(), self.name)


def describe(method: TokenMethod | None, num_layers: int, num_visual: int) -> dict[str, Any]:
    """A JSON-ready summary of the schedule actually run, with its average visual tokens per layer."""
    if method is None:
        return {
            "layer_list": [],
            "image_token_list": [],
            "visual_token_num": None,
            "avg_tokens": float(num_visual),
        }
    schedule = method.schedule()
    return {
        "layer_list": list(schedule.layer_list),
        "image_token_list": list(schedule.image_token_list),
        "visual_token_num": schedule.visual_token_num,
        "avg_tokens": schedule.average_tokens(num_layers, num_visual),
    }
