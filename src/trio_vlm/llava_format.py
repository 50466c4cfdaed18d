"""LLaVA-format question and answer files: read questions, resume answers, append lines durably."""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

QUESTION_KEYS = ("question_id", "image", "text")


@dataclass(frozen=True)
class Question:
    """One line of a question file."""

    question_id: Any
    image: str
    text: str
    line: int

    @property
    def key(self) -> tuple[str, str]:
        """Resume key: some benchmarks (MME) reuse a question id for different prompts."""
        return (str(self.question_id), self.text)


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line; ``ValueError`` names a malformed or non-UTF-8 line."""
    check_regular_file(path, "question file")
    with open(path, "rb") as fh:
        for number, data in enumerate(fh, start=1):
            try:
                raw = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"{path}:{number}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {exc.start + 1}); "
                    "save the file as UTF-8"
                ) from None
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: malformed JSON line ({exc.msg})") from exc
            if not isinstance(entry, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(entry).__name__}")
            yield number, entry


def require_keys(entry: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    """``ValueError`` naming ``where`` and the missing keys, if any."""
    missing = [k for k in keys if k not in entry]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")


IMAGE_PLACEHOLDER = "<image>"


def check_regular_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` if it is an existing regular file; ``FileNotFoundError`` / ``ValueError`` say what it is instead."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a regular file")
    return path


def check_question_text(text: str, where: str) -> None:
    """``ValueError`` for an empty question or one that holds the image placeholder (the prompt adds it)."""
    if not text.strip():
        raise ValueError(f"{where}: empty question text")
    if IMAGE_PLACEHOLDER in text:
        raise ValueError(
            f"{where}: the question contains {IMAGE_PLACEHOLDER!r}; remove it — the prompt template puts the "
            "image placeholder in front of the question"
        )


def read_questions(path: str | os.PathLike[str]) -> list[Question]:
    """Parse and validate a JSONL question file: every line an object with string ``image`` and non-empty
    ``text``, no question twice (same id and text), at least one question. ``ValueError`` names the line."""
    questions: list[Question] = []
    seen: dict[tuple[str, str], int] = {}
    for number, entry in iter_jsonl(path):
        where = f"{path}:{number}"
        require_keys(entry, QUESTION_KEYS, where)
        if not isinstance(entry["image"], str) or not isinstance(entry["text"], str):
            raise ValueError(f"{where}: 'image' and 'text' must be strings")
        check_question_text(entry["text"], where)
        question = Question(entry["question_id"], entry["image"], entry["text"], number)
        if question.key in seen:
            raise ValueError(
                f"{where}: question_id {question.question_id!r} with the same text is already on line "
                f"{seen[question.key]}; every question must be unique"
            )
        seen[question.key] = number
        questions.append(question)
    if not questions:
        raise ValueError(f"{path}: no questions in the file")
    return questions


def chunk(questions: list[Question], num_chunks: int, chunk_idx: int) -> list[Question]:
    """The ``chunk_idx``-th of ``num_chunks`` contiguous slices, as LLaVA's ``get_chunk`` splits."""
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"need 0 <= --chunk-idx < --num-chunks, got {chunk_idx} and {num_chunks}")
    size = math.ceil(len(questions) / num_chunks) if questions else 0
    return questions[chunk_idx * size : (chunk_idx + 1) * size]


def finished_keys(path: str | os.PathLike[str]) -> set[tuple[str, str]]:
    """Keys of the answers already in ``path``, cutting off a truncated last line so appends stay valid.

    A line that does not parse is tolerated only at the end of the file (an interrupted write); anywhere
    else it raises ``ValueError`` with its line number.
    """
    path = Path(path)
    if not path.exists():
        return set()
    if not path.is_file():
        raise ValueError(f"answers file {path} is not a regular file; give a file path")
    data = path.read_bytes()
    keys: set[tuple[str, str]] = set()
    offset, good_end = 0, 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        end = offset + len(raw) + (1 if number < len(lines) else 0)
        if raw.strip():
            try:
                entry = json.loads(raw)
                keys.add((str(entry["question_id"]), entry["prompt"]))
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
                if any(rest.strip() for rest in lines[number:]):
                    raise ValueError(f"{path}:{number}: malformed answer line ({exc})") from exc
                logger.warning("%s:%d: dropping a truncated last line", path, number)
                break
        offset = good_end = end
    if good_end < len(data) or (data and not data.endswith(b"\n")):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            if good_end and not data[:good_end].endswith(b"\n"):
                fh.seek(good_end)
                fh.write(b"\n")
    return keys


def answer_id(*parts: Any) -> str:
    """A stable answer id: the same question answered by the same run gets the same id (a resumed run writes
    exactly what an uninterrupted one would)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "trio-vlm:" + json.dumps(parts, sort_keys=True, default=str)).hex


def append_line(fh: IO[str], record: dict[str, Any]) -> None:
    """Write one JSON line and push it to disk, so a crash never loses a finished answer."""
    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    fh.flush()
    os.fsync(fh.fileno())
