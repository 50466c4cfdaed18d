"""Per-method schedules at the paper's budgets, scaled to the testbed model's depth.

A budget is the average number of visual tokens per decoder layer (the paper's arithmetic). The LLaVA-1.5
presets (32 layers) keep their relative drop depths (``scale_schedule``); the counts of LLM stages are then
multiplied by one common factor so that the average over *this* model's layers is the budget again.
"""

from __future__ import annotations

import dataclasses

from trio_vlm.cli.schedule_args import DEFAULT_PRESET, PRESET_LAYERS, scale_schedule
from trio_vlm.methods.base import TokenMethod
from trio_vlm.methods.registry import available_methods, method_class
from trio_vlm.schedule import Schedule
from trio_vlm.testbed.config import LLM_LAYERS
from trio_vlm.testbed.scene import GRID

BUDGETS: tuple[int, ...] = (192, 128, 64)
NUM_VISUAL = GRID * GRID
# Methods reported in both settings of the paper; the rest use their preset's default mode.
MODES: dict[str, tuple[str, ...]] = {"trio": ("wo_ve", "w_ve")}
NOT_METHODS = ("vanilla",)


def variants(names: list[str] | None = None) -> list[tuple[str, str | None]]:
    """(method, mode) pairs to evaluate: every registered method (or ``names``), TRIO in both modes."""
    chosen = [n for n in available_methods() if n not in NOT_METHODS] if names is None else names
    return [(name, mode) for name in chosen for mode in MODES.get(name, (None,))]


def variant_label(name: str, mode: str | None) -> str:
    """Row label, e.g. ``trio (w/o VE)``."""
    return name if mode is None else f"{name} ({'w/ VE' if mode == 'w_ve' else 'w/o VE'})"


def _with_factor(schedule: Schedule, base: tuple[int, ...], factor: float, cap: int) -> Schedule:
    counts: list[int] = []
    for count in base:
        limit = counts[-1] if counts else cap
        counts.append(max(1, min(limit, round(count * factor))))
    return Schedule(schedule.layer_list, tuple(counts), schedule.visual_token_num)


def fit_counts(schedule: Schedule, budget: int, num_layers: int, num_visual: int = NUM_VISUAL) -> Schedule:
    """``schedule`` with its LLM-stage counts scaled by one factor so the per-layer average is ``budget``
    (to the nearest reachable value); ``ValueError`` when even one token per stage averages above it."""
    if not schedule.layer_list:
        return schedule
    cap = num_visual if schedule.visual_token_num is None else min(schedule.visual_token_num, num_visual)
    base = schedule.image_token_list

    def average(factor: float) -> float:
        return _with_factor(schedule, base, factor, cap).average_tokens(num_layers, num_visual)

    if average(0.0) > budget + 0.5:
        raise ValueError(
            f"an average of {budget} visual tokens is out of reach for layer_list {list(schedule.layer_list)} "
            f"on a {num_layers}-layer model (one token per stage already averages {average(0.0):.1f})"
        )
    low, high = 0.0, float(num_visual)
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if average(mid) < budget else (low, mid)
    best = min((low, high), key=lambda f: abs(average(f) - budget))
    return _with_factor(schedule, base, best, cap)


def scaled_method(
    name: str,
    budget: int,
    mode: str | None = None,
    num_layers: int = LLM_LAYERS,
    num_visual: int = NUM_VISUAL,
) -> TokenMethod:
    """Method ``name`` at ``budget`` (average visual tokens per layer) on a ``num_layers``-layer model."""
    cls = method_class(name)
    kwargs = {} if mode is None else {"mode": mode}
    method = cls.preset(DEFAULT_PRESET, budget=budget, **kwargs)
    if not method.schedule().layer_list:
        return method  # encoder stage only: the average is visual_token_num at any depth
    scaled = scale_schedule(method, num_layers, num_visual)
    try:
        fitted = fit_counts(scaled.schedule(), budget, num_layers, num_visual)
    except ValueError:
        # Rounding the drop depths to the nearest layer can leave too many full layers (SparseVLM's drop after
        # 3 of 32 layers becomes 2 of 16); round them down instead, which keeps the order of the stages.
        scaled = dataclasses.replace(
            scaled, layer_list=_floor_layers(method.schedule().layer_list, num_layers)
        )
        fitted = fit_counts(scaled.schedule(), budget, num_layers, num_visual)
    return dataclasses.replace(scaled, image_token_list=fitted.image_token_list)


def _floor_layers(layers: tuple[int, ...], num_layers: int) -> tuple[int, ...]:
    """Preset drop depths scaled to ``num_layers`` and rounded down (at least 1, strictly increasing)."""
    out: list[int] = []
    for layer in layers:
        out.append(max(layer * num_layers // PRESET_LAYERS, out[-1] + 1 if out else 1))
    return tuple(out)
