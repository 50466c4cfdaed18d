"""Which method variants the testbed table reports: every registered method, TRIO in both of the paper's modes.

Schedules themselves come from each method's preset fitted to the testbed model (:mod:`trio_vlm.presets`).
"""

from __future__ import annotations

from trio_vlm.methods.registry import available_methods
from trio_vlm.presets import PAPER_BUDGETS

BUDGETS: tuple[int, ...] = PAPER_BUDGETS
# Methods reported in both settings of the paper; the rest use their preset's default mode.
MODES: dict[str, tuple[str, ...]] = {"trio": ("wo_ve", "w_ve")}


def variants(names: list[str] | None = None) -> list[tuple[str, str | None]]:
    """(method, mode) pairs to evaluate: every registered method but vanilla (or ``names``), TRIO in both modes."""
    chosen = available_methods(include_vanilla=False) if names is None else names
    return [(name, mode) for name in chosen for mode in MODES.get(name, (None,))]
