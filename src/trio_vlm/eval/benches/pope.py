"""POPE: yes/no object-hallucination questions in three splits (random, popular, adversarial)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trio_vlm.eval.benches.base import Answers, BenchFiles, Benchmark, BenchScore, LoadOptions
from trio_vlm.eval.reading.items import EvalItem
from trio_vlm.eval.reading.question_files import load_json_or_jsonl, require_file
from trio_vlm.llava_format import iter_jsonl, require_keys

SPLITS = ("random", "popular", "adversarial")
_NEGATIVE_WORDS = frozenset({"No", "no", "not"})


def pope_yes_no(text: str) -> str:
    """LLaVA's ``eval_pope`` reading: keep the first sentence, drop commas, split on spaces; "no" if a word
    is exactly "No", "no" or "not", otherwise "yes" (so "NO" and "Not sure" read as "yes", as there)."""
    first = text.split(".")[0]
    words = first.replace(",", "").split(" ")
    return "no" if _NEGATIVE_WORDS.intersection(words) else "yes"


def binary_metrics(preds: list[str], labels: list[str]) -> dict[str, float | int]:
    """Accuracy, precision, recall, F1 and yes-ratio (percent) with "yes" as the positive class."""
    tp = sum(p == "yes" and g == "yes" for p, g in zip(preds, labels))
    fp = sum(p == "yes" and g != "yes" for p, g in zip(preds, labels))
    tn = sum(p != "yes" and g != "yes" for p, g in zip(preds, labels))
    fn = sum(p != "yes" and g == "yes" for p, g in zip(preds, labels))
    n = len(preds)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": n,
        "accuracy": 100 * (tp + tn) / n if n else 0.0,
        "precision": 100 * precision,
        "recall": 100 * recall,
        "f1": 100 * f1,
        "yes_ratio": 100 * preds.count("yes") / n if n else 0.0,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


class Pope(Benchmark):
    name = "pope"
    folder = "pope"
    question_file = "llava_pope_test.jsonl"
    image_folder = "val2014"
    annotation = ("coco",)
    headline_name = "F1 (mean over splits)"

    def load(self, files: BenchFiles, options: LoadOptions) -> list[EvalItem]:
        items = []
        path = require_file(files.question_file, "POPE question file")
        for line, entry in iter_jsonl(path):
            where = f"{path}:{line}"
            require_keys(entry, ("question_id", "image", "text", "category"), where)
            items.append(
                EvalItem(
                    question_id=entry["question_id"],
                    prompt=entry["text"],
                    text=entry["text"],
                    image=files.image_folder / entry["image"],
                    info={"category": entry["category"], "image": entry["image"]},
                    source=where,
                )
            )
        return items

    def _labels(self, files: BenchFiles, split: str, questions: list[EvalItem]) -> list[str]:
        """The split's labels, paired with its questions by position as LLaVA's scorer pairs them; the
        images must agree line by line or the files do not belong together."""
        assert files.annotation is not None
        path = files.annotation / f"coco_pope_{split}.json"
        rows = load_json_or_jsonl(path, f"POPE label file for split {split!r}")
        if len(rows) != len(questions):
            raise ValueError(
                f"{path} has {len(rows)} labels but the question file has {len(questions)} {split!r} questions"
            )
        labels = []
        for i, (row, item) in enumerate(zip(rows, questions)):
            require_keys(row, ("label",), f"{path} entry {i}")
            if "image" in row and Path(row["image"]).name != Path(item.info["image"]).name:
                raise ValueError(
                    f"{path} entry {i} is about {row['image']} but question {item.question_id} "
                    f"({item.source}) is about {item.info['image']}: label and question files do not match"
                )
            label = str(row["label"]).strip().lower()
            if label not in ("yes", "no"):
                raise ValueError(f"{path} entry {i}: label must be 'yes' or 'no', got {row['label']!r}")
            labels.append(label)
        return labels

    def score(self, items: list[EvalItem], answers: Answers, files: BenchFiles, out_dir: Path) -> BenchScore:
        if files.annotation is None or not files.annotation.is_dir():
            raise FileNotFoundError(f"POPE label folder (coco_pope_*.json) not found: {files.annotation}")
        all_items = items
        splits: dict[str, Any] = {}
        notes = []
        categories = list(dict.fromkeys(item.info["category"] for item in all_items))
        unknown = [c for c in categories if c not in SPLITS]
        if unknown:
            notes.append(f"categories without a standard POPE split were not scored: {unknown}")
        for split in SPLITS:
            questions = [item for item in all_items if item.info["category"] == split]
            if not questions:
                continue
            labels = self._labels(files, split, questions)
            preds, golds = [], []
            for item, label in zip(questions, labels):
                if item.key in answers:
                    preds.append(pope_yes_no(answers[item.key]["text"]))
                    golds.append(label)
            if preds:
                splits[split] = binary_metrics(preds, golds)
        if not splits:
            return BenchScore(None, {"splits": {}}, notes + ["no POPE split had answers"])
        mean = {
            metric: sum(s[metric] for s in splits.values()) / len(splits)
            for metric in ("accuracy", "precision", "recall", "f1", "yes_ratio")
        }
        if len(splits) < len(SPLITS):
            notes.append(f"only {sorted(splits)} scored; the paper averages all three splits")
        return BenchScore(mean["f1"], {"splits": splits, "mean": mean}, notes)
