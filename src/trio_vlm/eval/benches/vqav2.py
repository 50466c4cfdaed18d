"""VQAv2: the test-dev submission file for EvalAI, and local VQA accuracy when annotations are given."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from trio_vlm.eval.benches.base import Answers, BenchFiles, Benchmark, BenchScore, LoadOptions
from trio_vlm.eval.benches.llava_jsonl import load_llava_jsonl
from trio_vlm.eval.reading.items import EvalItem
from trio_vlm.eval.reading.question_files import load_json
from trio_vlm.eval.scoring.vqa_accuracy import vqa_score
from trio_vlm.eval.scoring.vqa_text import normalize_vqa_answer
from trio_vlm.llava_format import iter_jsonl

FULL_TEST_SPLIT = "llava_vqav2_mscoco_test2015.jsonl"
SUBMISSION = "vqav2_submission.json"


def submission(items: list[EvalItem], answers: Answers, all_ids: list[Any] | None) -> list[dict[str, Any]]:
    """EvalAI's upload: ``{question_id, answer}`` with the EvalAI-processed answer for every question of the
    full test split when known (``""`` for questions not answered, as LLaVA's converter writes), else for
    every question of the question file."""
    by_id = {str(item.question_id): answers[item.key]["text"] for item in items if item.key in answers}
    ids = all_ids if all_ids is not None else [item.question_id for item in items]
    return [{"question_id": qid, "answer": normalize_vqa_answer(by_id.get(str(qid), ""))} for qid in ids]


class VQAv2(Benchmark):
    name = "vqav2"
    folder = "vqav2"
    question_file = "llava_vqav2_mscoco_test-dev2015.jsonl"
    image_folder = "test2015"
    annotation = ("v2_mscoco_val2014_annotations.json",)
    headline_name = "accuracy (val; test-dev via EvalAI)"

    def load(self, files: BenchFiles, options: LoadOptions) -> list[EvalItem]:
        return load_llava_jsonl(files.question_file, files.image_folder, "VQAv2 question file")

    def score(self, items: list[EvalItem], answers: Answers, files: BenchFiles, out_dir: Path) -> BenchScore:
        full = files.root / FULL_TEST_SPLIT
        all_ids = [entry["question_id"] for _, entry in iter_jsonl(full)] if full.is_file() else None
        upload = submission(items, answers, all_ids)
        out = out_dir / SUBMISSION
        out.write_text(json.dumps(upload), encoding="utf-8")
        notes = [f"EvalAI submission written to {out} ({len(upload)} questions)"]
        if files.annotation is None or not files.annotation.is_file():
            notes.append("no VQAv2 annotations here: test-dev is scored by the EvalAI server")
            return BenchScore(
                None, {"n": sum(item.key in answers for item in items)}, notes, {"submission": str(out)}
            )
        return self._score_val(items, answers, files.annotation, notes, out)

    def _score_val(
        self, items: list[EvalItem], answers: Answers, annotation: Path, notes: list[str], out: Path
    ) -> BenchScore:
        data = load_json(annotation, "VQAv2 annotation file")
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise ValueError(f"{annotation}: expected a JSON object with an 'annotations' list")
        truth = {str(a["question_id"]): a for a in data["annotations"]}
        scores: list[float] = []
        by_type: dict[str, list[float]] = defaultdict(list)
        for item in items:
            if item.key not in answers:
                continue
            entry = truth.get(str(item.question_id))
            if entry is None:
                raise ValueError(
                    f"VQAv2 question {item.question_id!r} ({item.source}) is not in {annotation}: "
                    "question file and annotations do not match"
                )
            score = vqa_score(answers[item.key]["text"], [a["answer"] for a in entry["answers"]])
            scores.append(score)
            by_type[entry.get("answer_type", "all")].append(score)
        accuracy = 100 * sum(scores) / len(scores) if scores else None
        per_type = {kind: 100 * sum(v) / len(v) for kind, v in sorted(by_type.items())}
        metrics = {"accuracy": accuracy, "n": len(scores), "by_answer_type": per_type}
        return BenchScore(accuracy, metrics, notes, {"submission": str(out)})
