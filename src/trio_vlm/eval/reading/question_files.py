"""Read LLaVA-format question files (JSON lines or a JSON list) with line-precise errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from trio_vlm.llava_format import iter_jsonl


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else ``FileNotFoundError`` saying which benchmark file is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def load_json(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a whole JSON file; errors name the file and what it should hold."""
    require_file(Path(path), what)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from exc


def load_json_or_jsonl(path: str | os.PathLike[str], what: str) -> list[dict[str, Any]]:
    """A list of objects from a JSON array or a JSON-lines file (POPE's label files come as either)."""
    require_file(Path(path), what)
    text = Path(path).read_text(encoding="utf-8").lstrip()
    if text.startswith("["):
        data = load_json(path, what)
        if not all(isinstance(x, dict) for x in data):
            raise ValueError(f"{what} {path}: expected a list of JSON objects")
        return data
    return [entry for _, entry in iter_jsonl(path)]
