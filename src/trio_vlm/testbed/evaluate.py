"""Score the testbed model on held-out questions, vanilla or pruned: one greedy answer token per question."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm import tqdm
from transformers import LlavaForConditionalGeneration, ProcessorMixin

from trio_vlm.api import apply
from trio_vlm.methods.base import TokenMethod
from trio_vlm.methods.fixed import Vanilla
from trio_vlm.prompts import prompt_for
from trio_vlm.testbed.generator import Example

DEFAULT_CONV_MODE = "vicuna_v1"


@dataclass
class Prediction:
    """The model's answer to one example, the visual tokens that reached the last layer (``None``: all),
    the ``(stage, tokens before, tokens after)`` of every drop, the prefill time, and the percentage of the
    question's evidence patches (the asked objects) among the tokens kept by the first drop and among those
    that reached the last layer (``None`` when the question has no evidence, e.g. counting an absent shape)."""

    index: int
    kind: str
    answer: str
    predicted: str
    kept: list[int] | None
    prefill_seconds: float
    stages: list[tuple[str | int, int, int]] = field(default_factory=list)
    evidence_first: float | None = None
    evidence_last: float | None = None
    average_tokens: float | None = None  # measured visual tokens per decoder layer

    @property
    def correct(self) -> bool:
        return self.predicted == self.answer


def prepare(
    model: LlavaForConditionalGeneration,
    processor: ProcessorMixin,
    example: Example,
    conv_mode: str = DEFAULT_CONV_MODE,
) -> dict[str, torch.Tensor]:
    """The model inputs for ``example``'s prompt and image, on the model's device and dtype."""
    prompt = prompt_for(example.question.text, conv_mode)
    inputs = processor(images=example.image, text=prompt, return_tensors="pt").to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return dict(inputs)


def predict(
    model: LlavaForConditionalGeneration,
    processor: ProcessorMixin,
    example: Example,
    method: TokenMethod | None = None,
    conv_mode: str = DEFAULT_CONV_MODE,
    inputs: dict[str, torch.Tensor] | None = None,
) -> Prediction:
    """Greedy first answer word for ``example`` (the whole answer: testbed answers are one word).

    ``inputs``: the example's :func:`prepare` output, to skip preprocessing when scoring many methods.
    """
    if inputs is None:
        inputs = prepare(model, processor, example, conv_mode)
    kept, first = None, None
    with torch.no_grad(), apply(model, method if method is not None else Vanilla()) as run:
        logits = model(**inputs, logits_to_keep=1).logits
    seconds = run.prefill_seconds[0]
    if run.events:
        first, kept = run.events[0].kept[0].tolist(), run.events[-1].kept[0].tolist()
    stages = [(e.stage.key, e.tokens_before[0], e.tokens_after[0]) for e in run.events]
    token = int(logits[0, -1].argmax())
    word = processor.tokenizer.convert_ids_to_tokens(token) or ""  # ids past the vocabulary decode to ""
    question = example.question
    evidence = set(question.evidence)
    shares = [None, None]
    if evidence:
        shares = [
            100.0 * (len(evidence) if chosen is None else len(evidence & set(chosen))) / len(evidence)
            for chosen in (first, kept)
        ]
    return Prediction(
        example.index,
        question.kind,
        question.answer,
        word,
        kept,
        seconds,
        stages,
        *shares,
        run.average_tokens(),
    )


def evaluate(
    model: LlavaForConditionalGeneration,
    processor: ProcessorMixin,
    examples: list[Example],
    method: TokenMethod | None = None,
    conv_mode: str = DEFAULT_CONV_MODE,
    desc: str | None = None,
    progress: bool = True,
    prepared: list[dict[str, torch.Tensor]] | None = None,
) -> list[Prediction]:
    """:func:`predict` for every example, with a progress bar (``prepared``: their :func:`prepare` outputs)."""
    label = desc or ("vanilla" if method is None else getattr(method, "name", type(method).__name__))
    if prepared is not None and len(prepared) != len(examples):
        raise ValueError(f"{len(prepared)} prepared inputs for {len(examples)} examples")
    bar = tqdm(range(len(examples)), desc=label, leave=False, disable=not progress)
    return [
        predict(model, processor, examples[i], method, conv_mode, None if prepared is None else prepared[i])
        for i in bar
    ]


def accuracy(predictions: list[Prediction]) -> float:
    """Percentage of correct predictions."""
    if not predictions:
        raise ValueError("no predictions to score")
    return 100.0 * sum(p.correct for p in predictions) / len(predictions)


def evidence_kept(predictions: list[Prediction], last: bool = False) -> float:
    """Mean percentage of evidence patches kept by the first drop (``last``: that reached the last layer),
    over the questions that have evidence."""
    values = [p.evidence_last if last else p.evidence_first for p in predictions]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def accuracy_by_kind(predictions: list[Prediction]) -> dict[str, float]:
    """Percentage correct per question kind."""
    kinds = sorted({p.kind for p in predictions})
    return {k: accuracy([p for p in predictions if p.kind == k]) for k in kinds}
