"""Answer one benchmark question with the model (and method) and build its LLaVA-format answer line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trio_vlm.eval.reading.images import prepare_image, square_fill
from trio_vlm.eval.reading.items import EvalItem
from trio_vlm.generation import generate_answer
from trio_vlm.llava_format import answer_id
from trio_vlm.methods.base import TokenMethod
from trio_vlm.methods.fixed import Vanilla
from trio_vlm.prompts import prompt_for


@dataclass
class Answerer:
    """Greedy (or sampled) answers as LLaVA's ``model_vqa_loader`` produces them; ``run`` is copied into each
    line's metadata so a resumed run can prove it continues the same configuration.

    ``planned_average`` (visual tokens per decoder layer the method's schedule spends on one image of a
    fixed-size family) is checked against the measured average of every answer: a line whose tokens differ
    from the run's schedule is an internal error, never written."""

    model: Any
    processor: Any
    method: TokenMethod
    gen_kwargs: dict[str, Any]
    conv_mode: str
    pad_square: bool
    model_id: str
    run: dict[str, Any]
    planned_average: float | None = None

    def __post_init__(self) -> None:
        self._fill = square_fill(self.processor, self.pad_square)

    def __call__(self, item: EvalItem) -> dict[str, Any]:
        image = item.load_image()
        if image is not None:
            image = prepare_image(image, self._fill)
        with_image = image is not None
        prompt = prompt_for(item.text, self.conv_mode, self.processor, image=with_image)
        method = self.method if with_image else Vanilla()
        answer = generate_answer(self.model, self.processor, image, prompt, method, self.gen_kwargs)
        measured, planned = answer.average_tokens, self.planned_average
        if with_image and None not in (measured, planned) and abs(measured - planned) > 1e-3:
            raise RuntimeError(
                f"question {item.question_id!r}: measured {answer.average_tokens:.3f} visual tokens per layer, "
                f"the schedule plans {self.planned_average:.3f}"
            )
        metadata = {"run": self.run, **answer.record()}
        record: dict[str, Any] = {"question_id": item.question_id}
        if "round_id" in item.extra:
            record["round_id"] = item.extra["round_id"]
        record.update(prompt=item.prompt, text=answer.text)
        record.update({k: v for k, v in item.extra.items() if k != "round_id"})
        record.update(
            answer_id=answer_id(self.run, item.question_id, item.prompt),
            model_id=self.model_id,
            metadata=metadata,
        )
        return record
