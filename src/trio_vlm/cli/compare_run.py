"""Run one method on one prepared input and keep what the comparison shows: answer, drops, timing, kept set."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from trio_vlm.adapters import adapter_for
from trio_vlm.api import apply
from trio_vlm.methods.base import TokenMethod

logger = logging.getLogger(__name__)


@dataclass
class MethodResult:
    """One comparison row. ``stages`` holds ``(stage, before, after)`` per drop of the first prefill;
    ``kept`` the original visual indices of the last drop (``None``: every token); ``error`` why it failed."""

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


def generate_ids(model: Any, inputs: Any, gen_kwargs: dict[str, Any]) -> torch.Tensor:
    """``model.generate`` with a pad token set when the checkpoint lacks one."""
    config = model.generation_config
    if config.pad_token_id is None and config.eos_token_id is not None:
        gen_kwargs = {**gen_kwargs, "pad_token_id": config.eos_token_id}
    return model.generate(**inputs, **gen_kwargs)


def run_method(
    label: str,
    method: TokenMethod,
    model: Any,
    processor: Any,
    inputs: Any,
    gen_kwargs: dict[str, Any],
    num_visual: int,
) -> MethodResult:
    """Generate under ``method`` (every row, vanilla included, goes through the same hooks and timer)."""
    with apply(model, method) as run:
        output = generate_ids(model, inputs, gen_kwargs)
    first = [e for e in run.events if e.call == 0]
    text = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
    num_layers = adapter_for(model).num_layers
    return MethodResult(
        label=label,
        answer=text.strip(),
        stages=[(e.stage, e.tokens_before[0], e.tokens_after[0]) for e in first],
        average_tokens=method.schedule().average_tokens(num_layers, num_visual),
        prefill_seconds=run.prefill_seconds[0] if run.prefill_seconds else None,
        kept=first[-1].kept[0] if first else None,
    )
