"""How runs are named in tables: the paper's settings ("w/ VE (64)") and method variants ("trio (w/ VE)")."""

from __future__ import annotations

from trio_vlm.methods.base import TokenMethod


def setting(method: TokenMethod, budget: int | None, num_visual: int | None) -> str:
    """The paper's row group: ``"Upper Bound (576)"`` for vanilla (``"Upper Bound (all)"`` when the number of
    visual tokens varies per image, ``num_visual=None``), else ``"w/ VE (B)"`` / ``"w/o VE (B)"`` by whether
    the method has an encoder stage."""
    if not method.schedule().layer_list and not method.schedule().has_encoder_stage:
        return f"Upper Bound ({'all' if num_visual is None else num_visual})"
    encoder = method.schedule().has_encoder_stage
    return f"{'w/ VE' if encoder else 'w/o VE'} ({budget})"


def variant(name: str, mode: str | None) -> str:
    """Row label of a method variant, e.g. ``trio (w/o VE)``; methods with one mode are named alone."""
    return name if mode is None else f"{name} ({'w/ VE' if mode == 'w_ve' else 'w/o VE'})"
