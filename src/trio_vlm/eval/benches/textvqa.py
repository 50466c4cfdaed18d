"""TextVQA val (with LLaVA's reference OCR tokens in the prompt): VQA soft accuracy, EvalAI processing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trio_vlm.eval.benches.base import Answers, BenchFiles, Benchmark, BenchScore, LoadOptions
from trio_vlm.eval.benches.llava_jsonl import load_llava_jsonl
from trio_vlm.eval.reading.items import EvalItem
from trio_vlm.eval.reading.question_files import load_json
from trio_vlm.eval.scoring.vqa_accuracy import vqa_score

_OCR_PREFIX = "Reference OCR token:"


def question_of_prompt(prompt: str) -> str:
    """The bare question inside a LLaVA TextVQA prompt (lower-cased), as LLaVA's ``eval_textvqa`` finds it:
    ``"OCR tokens: … Question: Q Short answer:"`` → Q; three lines with a reference-OCR line → the other
    first line; two lines → the first."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        start = prompt.find("Question: ")
        end = prompt.find(" Short answer:", start)
        if start < 0 or end < 0:
            raise ValueError(f"cannot find 'Question: … Short answer:' in TextVQA prompt {prompt!r}")
        question = prompt[start + len("Question: ") : end]
    elif _OCR_PREFIX + " " in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith(_OCR_PREFIX) else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(f"unrecognised TextVQA prompt layout: {prompt!r}")
    return question.lower()


class TextVQA(Benchmark):
    name = "textvqa"
    folder = "textvqa"
    question_file = "llava_textvqa_val_v051_ocr.jsonl"
    image_folder = "train_images"
    annotation = ("TextVQA_0.5.1_val.json",)
    headline_name = "accuracy"

    def load(self, files: BenchFiles, options: LoadOptions) -> list[EvalItem]:
        return load_llava_jsonl(files.question_file, files.image_folder, "TextVQA question file")

    def _annotations(self, path: Path) -> tuple[dict[tuple[str, str], Any], dict[str, Any]]:
        data = load_json(path, "TextVQA annotation file (TextVQA_0.5.1_val.json)")
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise ValueError(f"{path}: expected a JSON object with a 'data' list")
        by_image_question, by_id = {}, {}
        for entry in data["data"]:
            if len(entry.get("answers") or []) == 0:
                continue
            by_image_question[(str(entry["image_id"]), entry["question"].lower())] = entry
            if "question_id" in entry:
                by_id[str(entry["question_id"])] = entry
        return by_image_question, by_id

    def score(self, items: list[EvalItem], answers: Answers, files: BenchFiles, out_dir: Path) -> BenchScore:
        assert files.annotation is not None
        by_image_question, by_id = self._annotations(files.annotation)
        scores = []
        for item in items:
            if item.key not in answers:
                continue
            # LLaVA's question ids are image ids; the question text tells an image's questions apart.
            entry = by_image_question.get((str(item.question_id), question_of_prompt(item.prompt)))
            entry = entry or by_id.get(str(item.question_id))
            if entry is None:
                raise ValueError(
                    f"TextVQA question {item.question_id!r} ({item.source}) has no annotation in "
                    f"{files.annotation}: question file and annotations do not match"
                )
            scores.append(vqa_score(answers[item.key]["text"], entry["answers"]))
        accuracy = 100 * sum(scores) / len(scores) if scores else None
        return BenchScore(accuracy, {"accuracy": accuracy, "n": len(scores)})
