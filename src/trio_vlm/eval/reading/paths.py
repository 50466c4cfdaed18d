"""Find a benchmark's files under ``--data`` (LLaVA's ``playground/data/eval`` or the benchmark's folder)."""

from __future__ import annotations

import os
from pathlib import Path

from trio_vlm.eval.benches import BenchFiles, Benchmark


def resolve_files(
    bench: Benchmark,
    data: str | os.PathLike[str],
    *,
    question_file: str | os.PathLike[str] | None = None,
    image_folder: str | os.PathLike[str] | None = None,
    annotation: str | os.PathLike[str] | None = None,
) -> BenchFiles:
    """The benchmark's folder is ``data/<folder>`` when that exists (``--data playground/data/eval``), else
    ``data`` itself; explicit paths override the LLaVA layout. ``FileNotFoundError`` if ``data`` is missing
    (the question file is checked when it is read)."""
    data = Path(data).expanduser()
    if not data.is_dir():
        raise FileNotFoundError(f"--data folder not found: {data}")
    root = data / bench.folder if (data / bench.folder).is_dir() else data
    return BenchFiles(
        root=root,
        question_file=Path(question_file) if question_file else root / bench.question_file,
        image_folder=Path(image_folder) if image_folder else root / bench.image_folder,
        annotation=Path(annotation) if annotation else bench.default_annotation(root),
    )
