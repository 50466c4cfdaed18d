"""A method asked for by name (CLI, eval runs, the lmms-eval plugin, the testbed): built for a given model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trio_vlm import presets
from trio_vlm.methods.base import MODES, TokenMethod
from trio_vlm.methods.fixed import Vanilla
from trio_vlm.methods.registry import method_class


@dataclass(frozen=True)
class MethodRequest:
    """``name`` at ``budget`` (average visual tokens per decoder layer, default 64) and ``mode``, with field
    ``options`` on top (explicit schedule lists, ``tau``, …). Without a budget but with explicit schedule lists
    (``layer_list`` and counts or fractions), the method is built from the lists alone."""

    name: str = "trio"
    budget: int | None = None
    mode: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        cls = method_class(self.name)  # ValueError naming the unknown method
        object.__setattr__(self, "name", cls.name)
        object.__setattr__(self, "options", tuple(dict(self.options).items()))
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if cls is Vanilla:
            if self.budget is not None or self.mode is not None or self.options:
                raise ValueError("vanilla prunes nothing: it takes no budget, mode or schedule options")
            return
        if self.budget is not None:
            presets.check_budget(cls.name, self.budget)
        if self.mode is not None and self.mode not in cls.modes:
            raise ValueError(f"{cls.name} has no mode {self.mode!r}; its modes: {list(cls.modes)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(dict(self.options)) - names)
        if unknown:
            raise ValueError(
                f"{cls.name} has no option(s) {', '.join(unknown)}; its fields: {', '.join(sorted(names))}"
            )

    @property
    def is_vanilla(self) -> bool:
        return self.name == Vanilla.name

    @property
    def explicit(self) -> bool:
        """Whether the lists alone define the schedule (no budget given, layer_list and counts given)."""
        options = dict(self.options)
        counts = "image_token_list" in options or "image_token_ratio_list" in options
        return self.budget is None and "layer_list" in options and counts

    def build(self, model: Any = presets.DEFAULT_FAMILY) -> TokenMethod:
        """The method for ``model`` (a family name, shape, config or loaded model), its preset fitted by the
        rule of :mod:`trio_vlm.presets` unless the request gives the whole schedule."""
        cls = method_class(self.name)
        if cls is Vanilla:
            return Vanilla()
        options = dict(self.options)
        if self.explicit:
            if (
                self.mode == "w_ve"
                and "visual_token_num" not in options
                and "image_token_ratio" not in options
            ):
                raise ValueError("mode w_ve with explicit lists needs visual_token_num (or use mode wo_ve)")
            if self.mode == "wo_ve":
                options.setdefault("visual_token_num", None)
            return cls(**options)
        budget = presets.DEFAULT_BUDGET if self.budget is None else self.budget
        return cls.preset(model, budget, self.mode, **options)

    def describe(self) -> dict[str, Any]:
        """JSON-ready: name, budget, mode and options."""
        return {
            "method": self.name,
            "budget": None if self.is_vanilla else (self.budget or presets.DEFAULT_BUDGET),
            "mode": self.mode,
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in self.options},
        }
