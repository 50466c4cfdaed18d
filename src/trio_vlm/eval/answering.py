"""Answer one benchmark question with the model (and method) and build its LLaVA-format answer line."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from trio_vlm.cli.generation import generate_answer
from trio_vlm.eval.images import expand_to_square, mean_colour
from trio_vlm.eval.items import EvalItem
from trio_vlm.loading import prompt_for
from trio_vlm.methods.base import TokenMethod


def text_only_prompt(text: str, conv_mode: str) -> str:
    """The conversation prompt without the image placeholder (ScienceQA's questions without an image)."""
    return prompt_for(text, conv_mode).replace("<image>\n", "", 1)


@dataclass
class Answerer:
    """Greedy (or sampled) answers as LLaVA's ``model_vqa_loader`` produces them; ``run`` is copied into each
    line's metadata so a resumed run can prove it continues the same configuration."""

    model: Any
    processor: Any
    method: TokenMethod | None
    gen_kwargs: dict[str, Any]
    conv_mode: str
    pad_square: bool
    model_id: str
    run: dict[str, Any]

    def __post_init__(self) -> None:
        self._fill = mean_colour(self.processor) if self.pad_square else None

    def __call__(self, item: EvalItem) -> dict[str, Any]:
        image = item.load_image()
        if image is not None and self._fill is not None:
            image = expand_to_square(image, self._fill)
        if image is None:
            prompt, method = text_only_prompt(item.text, self.conv_mode), None
        else:
            prompt, method = prompt_for(item.text, self.conv_mode), self.method
        answer = generate_answer(self.model, self.processor, image, prompt, method, self.gen_kwargs)
        metadata = {
            "run": self.run,
            "visual_tokens": [
                {"call": s.call, "stage": s.stage, "before": s.before, "after": s.after}
                for s in answer.stages
            ],
            "prefill_seconds": answer.prefill_seconds,
            "total_seconds": answer.total_seconds,
        }
        record: dict[str, Any] = {"question_id": item.question_id}
        if "round_id" in item.extra:
            record["round_id"] = item.extra["round_id"]
        record.update(prompt=item.prompt, text=answer.text)
        record.update({k: v for k, v in item.extra.items() if k != "round_id"})
        record.update(answer_id=uuid.uuid4().hex, model_id=self.model_id, metadata=metadata)
        return record
