"""MME: two yes/no questions per image in 14 categories; score = (accuracy + accuracy+) × 100 per category."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from trio_vlm.eval.benches.base import Answers, BenchFiles, Benchmark, BenchScore, LoadOptions
from trio_vlm.eval.reading.items import EvalItem
from trio_vlm.eval.reading.question_files import require_file
from trio_vlm.llava_format import iter_jsonl, require_keys

PERCEPTION = (
    "existence", "count", "position", "color", "posters",
    "celebrity", "scene", "landmark", "artwork", "OCR",
)  # fmt: skip
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
_LLAVA_SUFFIX = "Answer the question using a single word or phrase."
_MME_SUFFIX = "Please answer yes or no."


def mme_yes_no(text: str) -> str:
    """The MME tool's reading: lower-cased "yes"/"no" as is; else "yes" if the first four characters contain
    "yes", "no" if they contain "no", otherwise "other" (always wrong)."""
    answer = text.lower()
    if answer in ("yes", "no"):
        return answer
    head = answer[:4]
    if "yes" in head:
        return "yes"
    return "no" if "no" in head else "other"


def question_key(question: str) -> str:
    """A question as both LLaVA's prompts and MME's answer files spell it: without either instruction
    suffix and with runs of whitespace collapsed (MME's own files sometimes have two spaces)."""
    text = question.replace(_LLAVA_SUFFIX, " ").replace(_MME_SUFFIX, " ")
    return re.sub(r"\s+", " ", text).strip()


def image_stem(question_id: str) -> str:
    """``"artwork/10002.jpg"`` → ``"10002"`` (the name of MME's per-image answer file)."""
    return question_id.split("/")[-1].split(".")[0]


def read_ground_truth(release: Path) -> dict[tuple[str, str, str], str]:
    """``{(category, image stem, question key): "yes"|"no"}`` from MME's release folder, where each category
    keeps ``<stem>.txt`` files of ``question<TAB>answer`` lines either beside its images or in
    ``questions_answers_YN/``."""
    if not release.is_dir():
        raise FileNotFoundError(f"MME release folder (MME_Benchmark_release_version) not found: {release}")
    truth: dict[tuple[str, str, str], str] = {}
    for category_dir in sorted(p for p in release.iterdir() if p.is_dir()):
        qa_dir = category_dir / "questions_answers_YN"
        qa_dir = qa_dir if qa_dir.is_dir() else category_dir
        for txt in sorted(qa_dir.glob("*.txt")):
            for number, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) != 2:
                    raise ValueError(f"{txt}:{number}: expected 'question<TAB>answer', got {line!r}")
                answer = parts[1].strip().lower()
                if answer not in ("yes", "no"):
                    raise ValueError(f"{txt}:{number}: the answer must be Yes or No, got {parts[1]!r}")
                truth[(category_dir.name, txt.stem, question_key(parts[0]))] = answer
    return truth


def category_score(results: dict[str, list[bool]]) -> dict[str, Any]:
    """``results`` maps an image to its questions' correctness. acc over questions, acc+ over images with
    both questions answered (an image with only one answer is left out of acc+ and counted)."""
    flat = [ok for oks in results.values() for ok in oks]
    complete = [oks for oks in results.values() if len(oks) >= 2]
    acc = sum(flat) / len(flat) if flat else 0.0
    acc_plus = sum(all(oks) for oks in complete) / len(complete) if complete else 0.0
    return {
        "questions": len(flat),
        "images": len(complete),
        "incomplete_images": len(results) - len(complete),
        "acc": 100 * acc,
        "acc_plus": 100 * acc_plus,
        "score": 100 * (acc + acc_plus),
    }


class MME(Benchmark):
    name = "mme"
    folder = "MME"
    question_file = "llava_mme.jsonl"
    image_folder = "MME_Benchmark_release_version"
    annotation = ("MME_Benchmark_release_version",)
    headline_name = "perception score"

    def load(self, files: BenchFiles, options: LoadOptions) -> list[EvalItem]:
        path = require_file(files.question_file, "MME question file")
        items = []
        for line, entry in iter_jsonl(path):
            where = f"{path}:{line}"
            require_keys(entry, ("question_id", "image", "text"), where)
            qid = str(entry["question_id"])
            if "/" not in qid:
                raise ValueError(f"{where}: MME question ids look like 'category/image.png', got {qid!r}")
            category = entry.get("category", qid.split("/")[0])
            items.append(
                EvalItem(
                    question_id=entry["question_id"],
                    prompt=entry["text"],
                    text=entry["text"],
                    image=files.image_folder / entry["image"],
                    info={"category": category, "stem": image_stem(qid)},
                    source=where,
                )
            )
        return items

    def score(self, items: list[EvalItem], answers: Answers, files: BenchFiles, out_dir: Path) -> BenchScore:
        assert files.annotation is not None
        truth = read_ground_truth(files.annotation)
        per_category: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        other = defaultdict(int)
        for item in items:
            if item.key not in answers:
                continue
            category, stem = item.info["category"], item.info["stem"]
            gold = truth.get((category, stem, question_key(item.prompt)))
            if gold is None:
                raise ValueError(
                    f"no MME ground truth for {item.question_id!r} ({item.source}) with question "
                    f"{item.prompt!r} in {files.annotation}: question file and release folder do not match"
                )
            pred = mme_yes_no(answers[item.key]["text"])
            other[category] += pred == "other"
            per_category[category][stem].append(pred == gold)
        categories = {c: {**category_score(r), "other_answers": other[c]} for c, r in per_category.items()}
        notes = []
        totals = {}
        for group, names in (("perception", PERCEPTION), ("cognition", COGNITION)):
            present = [c for c in names if c in categories]
            totals[group] = sum(categories[c]["score"] for c in present)
            missing = [c for c in names if c not in categories]
            if missing and present:
                notes.append(f"{group} sums {len(present)} of {len(names)} categories (missing: {missing})")
        unknown = sorted(set(categories) - set(PERCEPTION) - set(COGNITION))
        if unknown:
            notes.append(f"categories outside MME's 14 are reported but not summed: {unknown}")
        headline = totals["perception"] if any(c in categories for c in PERCEPTION) else None
        return BenchScore(headline, {**totals, "categories": categories}, notes)
