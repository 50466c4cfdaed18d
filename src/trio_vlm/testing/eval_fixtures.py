"""Tiny synthetic data sets in each benchmark's LLaVA file format (for tests, demos and the docs' sample
table). Images are drawn shapes; questions, labels and ground truth are made up and consistent."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHORT = "Answer the question using a single word or phrase."


def draw_image(seed: int, size: tuple[int, int] = (40, 28)) -> Image.Image:
    """A non-square picture of one coloured ellipse on white (non-square so padding matters)."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    colour = COLOURS[seed % len(COLOURS)]
    x = 2 + (seed * 7) % (size[0] - 14)
    draw.ellipse((x, 4, x + 12, 16), fill=colour)
    return image


def _save(path: Path, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_image(seed).save(path)
    return path.name


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def make_pope(root: Path) -> Path:
    """Two questions per split; labels alternate yes / no."""
    base = root / "pope"
    questions, qid = [], 0
    for split in ("random", "popular", "adversarial"):
        labels = []
        for j in range(2):
            qid += 1
            image = _save(base / "val2014" / f"COCO_val2014_{qid:012d}.jpg", qid)
            question = f"Is there a {COLOURS[qid % 6]} circle in the image?"
            questions.append(
                {"question_id": qid, "image": image, "text": f"{question}\n{SHORT}", "category": split}
            )
            labels.append(
                {"question_id": j + 1, "image": image, "text": question, "label": "yes" if j == 0 else "no"}
            )
        _jsonl(base / "coco" / f"coco_pope_{split}.json", labels)
    _jsonl(base / "llava_pope_test.jsonl", questions)
    return base


def make_mme(root: Path) -> Path:
    """Three categories, one image each (two questions): a flat perception category, ``artwork`` with
    ``images/`` + ``questions_answers_YN/`` folders, and a cognition category."""
    base = root / "MME"
    release = base / "MME_Benchmark_release_version"
    rows = []
    layouts = {"existence": False, "artwork": True, "code_reasoning": False}
    for seed, (category, nested) in enumerate(layouts.items()):
        image_dir = release / category / ("images" if nested else "")
        qa_dir = release / category / ("questions_answers_YN" if nested else "")
        name = _save(image_dir / f"{seed:04d}.png", seed)
        qa_dir.mkdir(parents=True, exist_ok=True)
        colour = COLOURS[seed]
        pairs = [(f"Is the shape {colour}?", "Yes"), (f"Is the shape {COLOURS[seed + 1]}?", "No")]
        (qa_dir / f"{seed:04d}.txt").write_text(
            "".join(f"{q}  Please answer yes or no.\t{a}\n" for q, a in pairs), encoding="utf-8"
        )
        image = f"{category}/images/{name}" if nested else f"{category}/{name}"
        for q, _ in pairs:
            rows.append(
                {"question_id": f"{category}/{name}", "image": image, "text": f"{q} Please answer yes or no."}
            )
    _jsonl(base / "llava_mme.jsonl", rows)
    return base


def make_gqa(root: Path) -> Path:
    base = root / "gqa"
    rows, truth = [], {}
    answers = ("yes", "no", "red", "left")
    for i, answer in enumerate(answers):
        qid = str(20000000 + i)
        image = _save(base / "data" / "images" / f"n{i}.jpg", i)
        rows.append({"question_id": qid, "image": image, "text": f"Question {i}?\n{SHORT}"})
        truth[qid] = {
            "answer": answer,
            "isBalanced": True,
            "types": {"structural": "verify" if i < 2 else "query", "semantic": "attr"},
        }
    _jsonl(base / "llava_gqa_testdev_balanced.jsonl", rows)
    _json(base / "data" / "testdev_balanced_questions.json", truth)
    return base


def make_textvqa(root: Path) -> Path:
    base = root / "textvqa"
    rows, data = [], []
    for i in range(3):
        image_id = f"{i:016x}"
        _save(base / "train_images" / f"{image_id}.jpg", i)
        question = f"what number is shown {i}?"
        rows.append(
            {
                "question_id": image_id,
                "image": f"{image_id}.jpg",
                "text": f"{question}\nReference OCR token: {i}, two\n{SHORT}",
            }
        )
        data.append(
            {"image_id": image_id, "question": question, "question_id": i, "answers": ["two"] * 6 + ["2"] * 4}
        )
    _jsonl(base / "llava_textvqa_val_v051_ocr.jsonl", rows)
    _json(base / "TextVQA_0.5.1_val.json", {"data": data})
    return base


def make_vqav2(root: Path) -> Path:
    """Three test-dev questions; the full test split lists one more (answered as "" in the submission)."""
    base = root / "vqav2"
    rows = []
    for i in range(3):
        image = _save(base / "test2015" / f"COCO_test2015_{i:012d}.jpg", i)
        rows.append({"question_id": 1000 + i, "image": image, "text": f"What colour is it {i}?\n{SHORT}"})
    _jsonl(base / "llava_vqav2_mscoco_test-dev2015.jsonl", rows)
    _jsonl(base / "llava_vqav2_mscoco_test2015.jsonl", [*rows, {**rows[0], "question_id": 9999}])
    return base


def make_sqa(root: Path) -> Path:
    """Three questions with an image and one without."""
    base = root / "scienceqa"
    entries, problems = [], {}
    for i in range(4):
        pid = str(10 + i)
        entry: dict[str, Any] = {"id": pid}
        value = f"Context: none.\nQuestion: which colour {i}?\nOptions: (A) red (B) blue (C) green"
        if i < 3:
            _save(base / "images" / "test" / pid / "image.png", i)
            entry["image"] = f"{pid}/image.png"
            value = "<image>\n" + value
        entry["conversations"] = [{"from": "human", "value": value}, {"from": "gpt", "value": "A"}]
        entries.append(entry)
        problems[pid] = {
            "choices": ["red", "blue", "green"],
            "answer": i % 3,
            "image": "image.png" if i < 3 else None,
        }
    _json(base / "llava_test_CQM-A.json", entries)
    _json(base / "problems.json", problems)
    _json(base / "pid_splits.json", {"test": list(problems), "val": []})
    return base


def _b64_png(seed: int) -> str:
    buffer = io.BytesIO()
    draw_image(seed).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def mmbench_rows(lang: str = "en") -> list[dict[str, str]]:
    """Two questions, each with one circular copy (index + 1e6, options rotated by one)."""
    rows = []
    for i, (options, answer) in enumerate(
        ((["cat", "dog", "cow", "pig"], "B"), (["up", "down", "left"], "C"))
    ):
        question = f"Which one is shown {i}?" if lang == "en" else f"图中是哪一个 {i}?"
        for copy in range(2):
            shown = options[copy:] + options[:copy]
            letters = "ABCD"[: len(options)]
            gold = letters[(letters.index(answer) - copy) % len(options)]
            row = {
                "index": str(i + copy * 1_000_000),
                "question": question,
                "hint": "A hint." if i == 0 else "nan",
                **{letter: "" for letter in "ABCD"},
                "answer": gold,
                "category": "recognition" if i == 0 else "spatial",
                "image": _b64_png(i),
            }
            row.update(dict(zip(letters, shown)))
            rows.append(row)
    return rows


def write_tsv(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = list(rows[0])
    lines = ["\t".join(header)] + ["\t".join(row[h] for h in header) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_mmbench(root: Path) -> Path:
    write_tsv(root / "mmbench" / "mmbench_dev_20230712.tsv", mmbench_rows("en"))
    return root / "mmbench"


def make_mmbench_cn(root: Path) -> Path:
    write_tsv(root / "mmbench_cn" / "mmbench_dev_cn_20231003.tsv", mmbench_rows("cn"))
    return root / "mmbench_cn"


MAKERS: dict[str, Callable[[Path], Path]] = {
    "gqa": make_gqa,
    "mmbench": make_mmbench,
    "mmbench_cn": make_mmbench_cn,
    "mme": make_mme,
    "pope": make_pope,
    "sqa": make_sqa,
    "vqav2": make_vqav2,
    "textvqa": make_textvqa,
}


def make_fixture(bench: str, root: Path) -> Path:
    """Write ``bench``'s fixture under ``root`` (laid out like ``playground/data/eval``); return its folder."""
    if bench not in MAKERS:
        raise ValueError(f"unknown benchmark {bench!r}; available: {', '.join(MAKERS)}")
    return MAKERS[bench](Path(root))
