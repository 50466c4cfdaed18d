"""Answers files: read them without modifying, and match them against a benchmark's questions."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trio_vlm.eval.reading.items import EvalItem

logger = logging.getLogger(__name__)

ANSWER_KEYS = ("question_id", "prompt", "text")


def read_answers(path: str | os.PathLike[str], *, tolerate_partial_tail: bool = True) -> list[dict[str, Any]]:
    """The records of a JSON-lines answers file, in file order, without touching the file.

    A last line that does not parse is an interrupted write (possibly still in progress by another rank)
    and is ignored when ``tolerate_partial_tail``; any other malformed line raises ``ValueError`` with its
    line number.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    records = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict):
                raise TypeError(f"expected a JSON object, got {type(entry).__name__}")
            missing = [k for k in ANSWER_KEYS if k not in entry]
            if missing:
                raise KeyError(f"missing key(s) {', '.join(missing)}")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            is_tail = not any(rest.strip() for rest in lines[number:])
            if is_tail and tolerate_partial_tail:
                logger.warning("%s:%d: ignoring an unfinished last line", path, number)
                break
            raise ValueError(f"{path}:{number}: malformed answer line ({exc})") from exc
        records.append(entry)
    return records


def answer_key(record: dict[str, Any]) -> tuple[str, str]:
    return (str(record["question_id"]), record["prompt"])


def index_answers(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Records by key; the first of duplicated keys wins (a resumed run never writes one twice)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        out.setdefault(answer_key(record), record)
    return out


def match_answers(
    items: list[EvalItem],
    answers: dict[tuple[str, str], dict[str, Any]],
    answers_path: str | os.PathLike[str],
) -> list[tuple[EvalItem, dict[str, Any]]]:
    """``(item, answer)`` pairs in question order; ``ValueError`` if the file answers questions that this
    benchmark's question file does not contain (a mismatched answers file)."""
    known = {item.key for item in items}
    foreign = [key for key in answers if key not in known]
    if foreign:
        qid, prompt = foreign[0]
        raise ValueError(
            f"answers file {answers_path} does not match the question file: {len(foreign)} of its "
            f"{len(answers)} answers have no question (first: question_id={qid!r}, prompt={prompt[:80]!r})"
        )
    return [(item, answers[item.key]) for item in items if item.key in answers]
