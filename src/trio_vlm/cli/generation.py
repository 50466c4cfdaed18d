"""Answer one image+prompt with or without pruning, timing the prefill and recording the drops."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image


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


@dataclass
class Answer:
    """A decoded answer with its pruning record and timings (seconds)."""

    text: str
    total_seconds: float
    prefill_seconds: float | None = None
    stages: list[StageCount] = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _prefill_timer(model: torch.nn.Module, device: torch.device) -> Iterator[list[float]]:
    """Time the first forward call (the prefill) of ``model`` inside the block."""
    seconds: list[float] = []
    start: list[float] = []

    def before(*_: Any, **__: Any) -> None:
        if not start:
            _sync(device)
            start.append(time.perf_counter())

    def after(*_: Any, **__: Any) -> None:
        if not seconds:
            _sync(device)
            seconds.append(time.perf_counter() - start[0])

    handles = [model.register_forward_pre_hook(before), model.register_forward_hook(after)]
    try:
        yield seconds
    finally:
        for handle in handles:
            handle.remove()


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


def _generate(model: Any, inputs: Any, gen_kwargs: dict[str, Any]) -> torch.Tensor:
    if model.generation_config.pad_token_id is None and model.generation_config.eos_token_id is not None:
        gen_kwargs = {**gen_kwargs, "pad_token_id": model.generation_config.eos_token_id}
    # No inference_mode: gradient-based methods (TRIO) need autograd; generate already runs under no_grad.
    return model.generate(**inputs, **gen_kwargs)


def generate_answer(
    model: Any,
    processor: Any,
    image: Image.Image,
    prompt: str,
    method: Any | None,
    gen_kwargs: dict[str, Any],
) -> Answer:
    """Answer ``prompt`` about ``image``; prune with ``method`` inside ``trio_vlm.apply`` unless it is ``None``."""
    device = model.device
    inputs = processor(images=image, text=prompt, return_tensors="pt").to(device=device, dtype=model.dtype)
    _sync(device)
    start = time.perf_counter()
    if method is None:
        with _prefill_timer(model, device) as prefill:
            output = _generate(model, inputs, gen_kwargs)
        stages: list[StageCount] = []
    else:
        from trio_vlm.api import apply

        with apply(model, method) as run:
            output = _generate(model, inputs, gen_kwargs)
        prefill = list(run.prefill_seconds)
        stages = [
            StageCount(call=e.call, stage=e.stage, before=e.tokens_before[0], after=e.tokens_after[0])
            for e in run.events
        ]
    _sync(device)
    total = time.perf_counter() - start
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    text = processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()
    return Answer(
        text=text, total_seconds=total, prefill_seconds=prefill[0] if prefill else None, stages=stages
    )
