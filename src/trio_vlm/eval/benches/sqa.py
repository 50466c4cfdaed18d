"""ScienceQA (test split; the paper's SQA-IMG column is the accuracy on questions with an image)."""

from __future__ import annotations

import re
from pathlib import Path

from trio_vlm.eval.benches.base import Answers, BenchFiles, Benchmark, BenchScore, LoadOptions
from trio_vlm.eval.reading.items import EvalItem
from trio_vlm.eval.reading.question_files import load_json, require_file

SINGLE_PRED_PROMPT = "Answer with the option's letter from the given choices directly."
LETTERS = ("A", "B", "C", "D", "E")
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def sqa_letter(text: str) -> str | None:
    """LLaVA's ``eval_science_qa`` parse: the whole answer is a letter A–E; or it starts with a letter and
    ". "; or "The answer is X" followed by one more character occurs exactly once. Anything else
    (including a bare "A.") is a failed parse, scored wrong."""
    if text in LETTERS:
        return text
    if len(text) >= 3 and text[0] in LETTERS and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else None


class ScienceQA(Benchmark):
    name = "sqa"
    folder = "scienceqa"
    question_file = "llava_test_CQM-A.json"
    image_folder = "images/test"
    annotation = ("problems.json",)
    headline_name = "IMG accuracy"

    def load(self, files: BenchFiles, options: LoadOptions) -> list[EvalItem]:
        if options.sqa_subset not in ("img", "all"):
            raise ValueError(f"ScienceQA subset must be 'img' or 'all', got {options.sqa_subset!r}")
        path = require_file(files.question_file, "ScienceQA question file")
        data = load_json(path, "ScienceQA question file")
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of questions")
        items = []
        for i, entry in enumerate(data):
            where = f"{path} entry {i}"
            try:
                question = entry["conversations"][0]["value"]
                qid = entry["id"]
            except (KeyError, IndexError, TypeError) as exc:
                raise ValueError(f"{where}: expected 'id' and 'conversations'[0]['value'] ({exc})") from exc
            image = entry.get("image")
            if options.sqa_subset == "img" and not image:
                continue
            body = question.replace("<image>", "").strip()
            prompt = ("<image>\n" if image else "") + body + "\n" + SINGLE_PRED_PROMPT
            items.append(
                EvalItem(
                    question_id=qid,
                    prompt=prompt,
                    text=body + "\n" + SINGLE_PRED_PROMPT,
                    image=files.image_folder / image if image else None,
                    source=where,
                )
            )
        return items

    def score(self, items: list[EvalItem], answers: Answers, files: BenchFiles, out_dir: Path) -> BenchScore:
        assert files.annotation is not None
        problems = load_json(files.annotation, "ScienceQA problems.json")
        splits = load_json(
            require_file(files.root / "pid_splits.json", "ScienceQA pid_splits.json"), "pid_splits"
        )
        test_ids = set(map(str, splits.get("test", [])))
        correct, img_correct, img_total, unparsed = 0, 0, 0, 0
        total = 0
        for item in items:
            if item.key not in answers:
                continue
            pid = str(item.question_id)
            if pid not in problems or pid not in test_ids:
                raise ValueError(
                    f"ScienceQA question {pid!r} ({item.source}) is not a test problem in {files.annotation}: "
                    "question file and problems do not match"
                )
            problem = problems[pid]
            letter = sqa_letter(answers[item.key]["text"])
            unparsed += letter is None
            valid = LETTERS[: len(problem["choices"])]
            ok = letter in valid and valid.index(letter) == problem["answer"]
            total += 1
            correct += ok
            if "<image>" in item.prompt:
                img_total += 1
                img_correct += ok
        img_accuracy = 100 * img_correct / img_total if img_total else None
        metrics = {
            "img_accuracy": img_accuracy,
            "img_n": img_total,
            "accuracy": 100 * correct / total if total else None,
            "n": total,
            "unparsed": unparsed,
        }
        return BenchScore(img_accuracy, metrics)
