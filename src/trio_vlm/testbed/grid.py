"""Method × budget accuracy grid on the testbed, with the paper's "Average % of vanilla" column."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from transformers import LlavaForConditionalGeneration, ProcessorMixin

from trio_vlm.labels import variant
from trio_vlm.methods.request import MethodRequest
from trio_vlm.presets import shape_of
from trio_vlm.testbed.evaluate import (
    Prediction,
    accuracy,
    accuracy_by_kind,
    evaluate,
    evidence_kept,
    prepare,
)
from trio_vlm.testbed.generator import Example

logger = logging.getLogger(__name__)


@dataclass
class Row:
    """One line of the table: a method variant at one budget (``budget`` None: vanilla)."""

    label: str
    budget: int | None
    accuracy: float
    by_kind: dict[str, float]
    schedule: dict[str, object] = field(default_factory=dict)
    error: str | None = None
    evidence: float = float("nan")  # mean % of the asked objects' patches kept by the first drop
    evidence_last: float = float("nan")  # ... and that reached the last layer

    def relative(self, vanilla: Row) -> float:
        """The paper's Average: mean over question kinds of (accuracy / vanilla accuracy) in % (kinds where
        vanilla scores 0 are left out; NaN if that is all of them)."""
        ratios = [100.0 * self.by_kind.get(k, 0.0) / v for k, v in vanilla.by_kind.items() if v > 0]
        return sum(ratios) / len(ratios) if ratios else float("nan")


def _row(label: str, budget: int | None, predictions: list[Prediction], schedule: dict) -> Row:
    return Row(
        label,
        budget,
        accuracy(predictions),
        accuracy_by_kind(predictions),
        schedule,
        evidence=evidence_kept(predictions),
        evidence_last=evidence_kept(predictions, last=True),
    )


def run_grid(
    model: LlavaForConditionalGeneration,
    processor: ProcessorMixin,
    examples: list[Example],
    variants: list[tuple[str, str | None]],
    budgets: list[int],
    progress: bool = True,
) -> tuple[Row, list[Row]]:
    """The vanilla row and one row per (variant, budget), budgets outermost as in the paper's table.

    A variant that has no schedule at a budget on this model (e.g. out of reach) gets a row with ``error``.
    """
    prepared = [prepare(model, processor, ex) for ex in examples]
    vanilla = _row(
        "vanilla", None, evaluate(model, processor, examples, progress=progress, prepared=prepared), {}
    )
    rows = []
    for budget in budgets:
        for name, mode in variants:
            label = variant(name, mode)
            try:
                method = MethodRequest(name, budget, mode).build(model)
            except ValueError as exc:
                logger.warning("%s at %d: %s", label, budget, exc)
                rows.append(Row(label, budget, float("nan"), {}, error=str(exc)))
                continue
            sched = method.schedule()
            shape = shape_of(model)
            schedule = {
                "layer_list": list(sched.layer_list),
                "image_token_list": list(sched.image_token_list),
                "visual_token_num": sched.visual_token_num,
                "average": round(method.average_tokens(shape.num_layers, shape.visual), 2),
            }
            predictions = evaluate(
                model, processor, examples, method, desc=f"{label}@{budget}", progress=progress
            )
            measured = {p.average_tokens for p in predictions}
            if measured != {method.average_tokens(shape.num_layers, shape.visual)}:
                raise RuntimeError(
                    f"{label}@{budget}: measured averages {sorted(measured)} differ from the schedule's"
                )
            schedule["measured_average"] = round(predictions[0].average_tokens, 2)
            rows.append(_row(label, budget, predictions, schedule))
    return vanilla, rows
