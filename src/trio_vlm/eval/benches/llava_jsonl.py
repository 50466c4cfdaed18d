"""Loader shared by the benchmarks whose question file is plain LLaVA JSON lines (question_id, image, text)."""

from __future__ import annotations

from pathlib import Path

from trio_vlm.eval.reading.items import EvalItem
from trio_vlm.eval.reading.question_files import require_file
from trio_vlm.llava_format import iter_jsonl, require_keys


def load_llava_jsonl(question_file: Path, image_folder: Path, what: str) -> list[EvalItem]:
    """One :class:`EvalItem` per line; the recorded prompt is the line's ``text`` (as model_vqa_loader)."""
    path = require_file(question_file, what)
    items = []
    for line, entry in iter_jsonl(path):
        where = f"{path}:{line}"
        require_keys(entry, ("question_id", "image", "text"), where)
        if not isinstance(entry["text"], str) or not isinstance(entry["image"], str):
            raise ValueError(f"{where}: 'image' and 'text' must be strings")
        items.append(
            EvalItem(
                question_id=entry["question_id"],
                prompt=entry["text"],
                text=entry["text"],
                image=image_folder / entry["image"],
                source=where,
            )
        )
    return items
