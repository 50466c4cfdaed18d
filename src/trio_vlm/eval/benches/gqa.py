"""GQA test-dev balanced: exact match with the official answer after LLaVA's conversion."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from trio_vlm.eval.benches.base import Answers, BenchFiles, Benchmark, BenchScore, LoadOptions
from trio_vlm.eval.benches.llava_jsonl import load_llava_jsonl
from trio_vlm.eval.reading.items import EvalItem
from trio_vlm.eval.reading.question_files import load_json


def gqa_prediction(text: str) -> str:
    """LLaVA's ``convert_gqa_for_eval``: strip trailing periods, then lower-case (nothing else)."""
    return text.rstrip(".").lower()


class GQA(Benchmark):
    name = "gqa"
    folder = "gqa"
    question_file = "llava_gqa_testdev_balanced.jsonl"
    image_folder = "data/images"
    annotation = (
        "data/testdev_balanced_questions.json",
        "data/questions1.2/testdev_balanced_questions.json",
        "testdev_balanced_questions.json",
    )
    headline_name = "accuracy"

    def load(self, files: BenchFiles, options: LoadOptions) -> list[EvalItem]:
        return load_llava_jsonl(files.question_file, files.image_folder, "GQA question file")

    def score(self, items: list[EvalItem], answers: Answers, files: BenchFiles, out_dir: Path) -> BenchScore:
        assert files.annotation is not None
        truth = load_json(files.annotation, "GQA questions file (testdev_balanced_questions.json)")
        if not isinstance(truth, dict):
            raise ValueError(f"{files.annotation}: expected a JSON object of question id -> question")
        correct: list[bool] = []
        by_type: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        unbalanced = 0
        for item in items:
            if item.key not in answers:
                continue
            gold = truth.get(str(item.question_id))
            if gold is None:
                raise ValueError(
                    f"GQA question {item.question_id!r} ({item.source}) is not in {files.annotation}: "
                    "question file and ground truth do not match"
                )
            if not gold.get("isBalanced", True):
                unbalanced += 1
                continue
            ok = gqa_prediction(answers[item.key]["text"]) == gold["answer"]
            correct.append(ok)
            for kind, value in (gold.get("types") or {}).items():
                if kind in ("structural", "semantic") and value:
                    by_type[kind][value].append(ok)
        notes = (
            [f"{unbalanced} unbalanced questions skipped (the official tool skips them)"]
            if unbalanced
            else []
        )
        accuracy = 100 * sum(correct) / len(correct) if correct else None
        types = {
            kind: {value: 100 * sum(oks) / len(oks) for value, oks in sorted(values.items())}
            for kind, values in by_type.items()
        }
        return BenchScore(accuracy, {"accuracy": accuracy, "n": len(correct), "by_type": types}, notes)
