"""A local lmms-eval task over held-out testbed questions, for running lmms-eval's own evaluator offline.

:func:`write_task` writes the questions' images, a JSON-lines data file and ``trio_testbed.yaml`` into a folder
that ``lmms-eval --include_path`` reads; the YAML points at :func:`doc_to_visual` and :func:`doc_to_text` here.
Answers are one word, scored by lmms-eval's ``exact_match`` (case-insensitive).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PIL import Image

from trio_vlm.testbed.generator import EVAL_SEED, Example, benchmark

TASK = "trio_testbed"
DATA = "questions.jsonl"

_YAML = f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {DATA}
test_split: test
output_type: generate_until
doc_to_visual: !function trio_vlm.testing.lmms_task.doc_to_visual
doc_to_text: !function trio_vlm.testing.lmms_task.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 1
  temperature: 0
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
metadata:
  version: 0.0
"""


def write_task(folder: str | os.PathLike[str], questions: int = 6, seed: int = EVAL_SEED) -> list[Example]:
    """Write the task (images, data file, YAML) for the first ``questions`` held-out testbed examples of
    stream ``seed`` into ``folder``; return the examples in document order."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    examples = benchmark(questions, seed=seed)
    rows = []
    for example in examples:
        image = folder / "images" / f"{example.index:05d}.png"
        example.image.save(image)
        question = example.question
        rows.append(
            {
                "index": example.index,
                "image": str(image.resolve()),
                "question": question.text,
                "answer": question.answer,
                "kind": question.kind,
            }
        )
    (folder / DATA).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / f"{TASK}.yaml").write_text(_YAML, encoding="utf-8")
    return examples


def doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    """The document's image."""
    with Image.open(doc["image"]) as image:
        return [image.convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The question as asked in training (the conversation template is the model's business)."""
    return doc["question"]
