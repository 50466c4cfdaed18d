"""Answer one image + prompt with any method (vanilla included), timed and recorded the same way for all."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from trio_vlm.api import PruneRun, apply
from trio_vlm.methods.base import TokenMethod
from trio_vlm.methods.fixed import Vanilla


@dataclass
class StageCount:
    """Visual tokens before and after one drop of one prefill call (first sample)."""

    call: int
    stage: str | int
    before: int
    after: int

    def label(self) -> str:
        """``"encoder"`` or ``"after layer L"``."""
        return "encoder" if self.stage == "encoder" else f"after layer {self.stage}"

    def to_dict(self) -> dict[str, Any]:
        return {"call": self.call, "stage": self.stage, "before": self.before, "after": self.after}


@dataclass
class Answer:
    """A decoded answer with its pruning record and timings (seconds): ``tokens_per_layer`` and
    ``average_tokens`` are measured (visual tokens entering each decoder layer in the first prefill)."""

    text: str
    total_seconds: float
    prefill_seconds: float | None = None
    stages: list[StageCount] = field(default_factory=list)
    tokens_per_layer: list[int] = field(default_factory=list)
    average_tokens: float | None = None

    def record(self) -> dict[str, Any]:
        """JSON-ready pruning record (drops, measured tokens per decoder layer and their average) and timings."""
        return {
            "visual_tokens": [s.to_dict() for s in self.stages],
            "tokens_per_layer": self.tokens_per_layer,
            "avg_visual_tokens": self.average_tokens,
            "prefill_seconds": self.prefill_seconds,
            "total_seconds": self.total_seconds,
        }


def sync(device: torch.device) -> None:
    """Wait for the device (CUDA) so wall-clock timings cover the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generation_kwargs(
    max_new_tokens: int, temperature: float = 0.0, top_p: float | None = None, num_beams: int = 1
) -> dict[str, Any]:
    """``generate`` options in LLaVA's convention: ``temperature == 0`` means greedy decoding."""
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "num_beams": num_beams}
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature)
        if top_p is not None:
            kwargs["top_p"] = top_p
    else:
        kwargs["do_sample"] = False
    return kwargs


def with_pad_token(model: Any, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``gen_kwargs`` with ``pad_token_id`` set to EOS when the checkpoint defines no pad token."""
    config = model.generation_config
    if config.pad_token_id is None and config.eos_token_id is not None and "pad_token_id" not in gen_kwargs:
        return {**gen_kwargs, "pad_token_id": config.eos_token_id}
    return gen_kwargs


def generate(
    model: Any, inputs: Any, gen_kwargs: dict[str, Any], method: TokenMethod | None = None
) -> tuple[Any, PruneRun]:
    """``model.generate`` under ``method`` (default: vanilla) — every method, vanilla included, through the
    same hooks and prefill timer. Runs under ``torch.no_grad()`` (TRIO's probe enables grad for one layer)."""
    with torch.no_grad(), apply(model, method if method is not None else Vanilla()) as run:
        output = model.generate(**inputs, **with_pad_token(model, gen_kwargs))
    return output, run


def prepare_inputs(
    model: Any,
    processor: Any,
    image: Image.Image | list[Image.Image] | None,
    prompt: str | list[str],
) -> Any:
    """The processor's tensors for ``prompt`` (and ``image``) on the model's device, pixels in its dtype.

    Lists of prompts (and one image per prompt) make one batch, left-padded for generation."""
    kwargs: dict[str, Any] = {"text": prompt, "return_tensors": "pt"}
    if image is not None:
        kwargs["images"] = image
    if isinstance(prompt, list) and len(prompt) > 1:
        kwargs.update(padding=True, padding_side="left")
    inputs = processor(**kwargs)
    return inputs.to(device=model.device, dtype=model.dtype) if hasattr(inputs, "to") else inputs


def generate_answers(
    model: Any,
    processor: Any,
    images: list[Image.Image] | None,
    prompts: list[str],
    method: TokenMethod | None,
    gen_kwargs: dict[str, Any],
) -> list[Answer]:
    """Answer a batch: ``prompts[i]`` about ``images[i]`` (``images=None``: text-only prompts) in one
    ``generate`` call with ``method`` (``None``: vanilla); every answer carries its own sample's drops and
    measured tokens, and the batch's timings."""
    if images is not None and len(images) != len(prompts):
        raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
    device = model.device
    inputs = prepare_inputs(model, processor, images, prompts)
    sync(device)
    start = time.perf_counter()
    output, run = generate(model, inputs, gen_kwargs, method)
    sync(device)
    total = time.perf_counter() - start
    texts = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    counts = run.calls[0].visual_tokens if run.calls else []
    answers = []
    for i, text in enumerate(texts):
        stages = [
            StageCount(call=e.call, stage=e.stage.key, before=e.tokens_before[i], after=e.tokens_after[i])
            for e in run.events
        ]
        has_visual = i < len(counts) and counts[i] > 0
        answers.append(
            Answer(
                text=text.strip(),
                total_seconds=total,
                prefill_seconds=run.prefill_seconds[0] if run.calls else None,
                stages=stages,
                tokens_per_layer=run.tokens_per_layer(0, i) if has_visual else [],
                average_tokens=run.average_tokens(0, i) if has_visual else None,
            )
        )
    return answers


def generate_answer(
    model: Any,
    processor: Any,
    image: Image.Image | None,
    prompt: str,
    method: TokenMethod | None,
    gen_kwargs: dict[str, Any],
) -> Answer:
    """Answer ``prompt`` about ``image`` with ``method`` (``None``: vanilla); decode the new tokens."""
    return generate_answers(
        model, processor, None if image is None else [image], [prompt], method, gen_kwargs
    )[0]
