"""Every method on one input, side by side: which methods, run each, and draw what each kept."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trio_vlm.generation import generate
from trio_vlm.methods.base import TokenMethod
from trio_vlm.methods.compose import Compose
from trio_vlm.methods.fixed import Vanilla
from trio_vlm.methods.registry import available_methods, method_class
from trio_vlm.overlay import save_overlay
from trio_vlm.presets import ModelShape

logger = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One row of the comparison: a method to run, or the reason it cannot run (``skipped``)."""

    label: str
    method: TokenMethod | None
    skipped: str | None = None


@dataclass
class MethodResult:
    """One comparison row. ``stages`` holds ``(stage, before, after)`` per drop of the first prefill;
    ``kept`` the original visual indices of the last drop (``None``: every token); ``error`` why it failed.
    ``average_tokens`` is measured (visual tokens per decoder layer)."""

    label: str
    answer: str = ""
    stages: list[tuple[str | int, int, int]] = field(default_factory=list)
    average_tokens: float | None = None
    prefill_seconds: float | None = None
    kept: torch.Tensor | None = None
    error: str | None = None

    def stage_text(self) -> str:
        """``"encoder 576->64; L2 64->32"`` (``"-"`` without drops)."""
        parts = [
            f"{'encoder' if stage == 'encoder' else f'L{stage}'} {before}->{after}"
            for stage, before, after in self.stages
        ]
        return "; ".join(parts) or "-"

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.label,
            "answer": self.answer,
            "stages": [list(s) for s in self.stages],
            "avg_visual_tokens": self.average_tokens,
            "prefill_seconds": self.prefill_seconds,
            "kept": None if self.kept is None else self.kept.tolist(),
            "error": self.error,
        }


def selected_names(spec: str) -> list[str]:
    """``"all"`` → every registered method but vanilla; else a comma-separated list, checked by the registry."""
    if spec.strip().lower() == "all":
        return available_methods(include_vanilla=False)
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--methods must be 'all' or a comma-separated list of names, got {spec!r}")
    for name in names:
        method_class(name)  # ValueError naming the unknown method and the available ones
    return [n for n in dict.fromkeys(names) if n != Vanilla.name]


def build_candidates(
    names: list[str],
    shape: ModelShape,
    budget: int,
    *,
    encoder_method: str | None = None,
    encoder_tokens: int | None = None,
) -> list[Candidate]:
    """Each method's preset at ``budget`` fitted to ``shape``, after vanilla.

    With ``encoder_method``, every method with LLM stages and no encoder stage runs after that method's
    encoder stage (``encoder_tokens``: its budget, default ``2·budget`` capped at the visual tokens), as
    ``Compose(encoder, method)``. A method without a preset for the model becomes a skipped row.
    """
    encoder = None
    if encoder_method is not None:
        tokens = encoder_tokens if encoder_tokens is not None else min(2 * budget, shape.visual)
        encoder = method_class(encoder_method).preset(shape, tokens)
        if not encoder.schedule().has_encoder_stage:
            raise ValueError(f"--encoder-method {encoder_method} has no encoder stage")
    out = [Candidate("vanilla", Vanilla())]
    for name in names:
        try:
            method = method_class(name).preset(shape, budget)
            schedule = method.schedule()
            if encoder is not None and schedule.layer_list and not schedule.has_encoder_stage:
                method = Compose(encoder, method)
        except ValueError as exc:
            out.append(Candidate(name, None, str(exc)))
            continue
        out.append(Candidate(method.name, method))
    return out


def run_method(
    label: str, method: TokenMethod, model: Any, processor: Any, inputs: Any, gen_kwargs: dict[str, Any]
) -> MethodResult:
    """Generate under ``method`` (every row, vanilla included, goes through the same hooks and timer)."""
    output, run = generate(model, inputs, gen_kwargs, method)
    first = [e for e in run.events if e.call == 0]
    text = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
    return MethodResult(
        label=label,
        answer=text.strip(),
        stages=[(e.stage.key, e.tokens_before[0], e.tokens_after[0]) for e in first],
        average_tokens=run.average_tokens(0),
        prefill_seconds=run.prefill_seconds[0] if run.calls else None,
        kept=first[-1].kept[0] if first else None,
    )


def run_all(
    candidates: list[Candidate], model: Any, processor: Any, inputs: Any, gen_kwargs: dict[str, Any]
) -> list[MethodResult]:
    """Run every candidate; a method that fails on this model becomes a row with the error."""
    results = []
    for cand in candidates:
        if cand.method is None:
            results.append(MethodResult(cand.label, error=f"skipped: {cand.skipped}"))
            continue
        try:
            results.append(run_method(cand.label, cand.method, model, processor, inputs, gen_kwargs))
        except (RuntimeError, ValueError, IndexError, KeyError) as exc:
            logger.warning("%s failed: %s", cand.label, exc)
            logger.debug("traceback of %s", cand.label, exc_info=True)
            results.append(MethodResult(cand.label, error=f"failed: {exc}"))
    return results


def table(results: list[MethodResult]) -> str:
    """The human table: method, measured average tokens per layer, tokens per stage, prefill, answer."""
    head = ("method", "avg tokens/layer", "tokens per stage", "prefill (s)", "answer")
    rows = [head]
    for r in results:
        avg = "-" if r.average_tokens is None else f"{r.average_tokens:.1f}"
        prefill = "-" if r.prefill_seconds is None else f"{r.prefill_seconds:.4f}"
        answer = f"({r.error})" if r.error else " ".join(r.answer.split())
        rows.append((r.label, avg, r.stage_text(), prefill, answer))
    widths = [max(len(row[c]) for row in rows) for c in range(len(head) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def model_view(
    pixel_values: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> np.ndarray:
    """(H, W, 3) floats in [0, 1]: one image's ``pixel_values`` (3, H, W) with the processor's normalisation
    undone (min-max scaled when the processor gives no mean/std)."""
    x = pixel_values.detach().float().cpu()
    if mean is not None and std is not None:
        x = x * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    else:
        x = (x - x.min()) / (x.max() - x.min()).clamp(min=1e-6)
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def plot_kept_tokens(
    image: np.ndarray,
    panels: Sequence[tuple[str, torch.Tensor | None]],
    num_visual: int,
    path: str | os.PathLike[str],
    columns: int = 5,
) -> Path:
    """Save one panel per ``(title, kept original indices)`` over ``image`` to ``path``; return the path."""
    if not panels:
        raise ValueError("nothing to plot: no method produced a result")
    return save_overlay(
        [(image, title, kept) for title, kept in panels], num_visual, path, columns, ignore_beyond=True
    )
