"""What every benchmark provides: where its files live in LLaVA's ``eval.zip``, a loader and a scorer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from trio_vlm.eval.reading.items import EvalItem

Answers = dict[tuple[str, str], dict[str, Any]]


@dataclass(frozen=True)
class BenchFiles:
    """Resolved locations: the benchmark's folder, question file, image folder and ground truth
    (a file or folder; ``None`` where the benchmark has none locally, e.g. VQAv2 test-dev)."""

    root: Path
    question_file: Path
    image_folder: Path
    annotation: Path | None


@dataclass
class BenchScore:
    """A scorer's result: the paper's number (``headline``, ``None`` if not computable locally), every
    metric, notes for the reader, and extra files written (e.g. the VQAv2 submission)."""

    headline: float | None
    metrics: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadOptions:
    """Loader switches: ScienceQA's subset (``"img"`` or ``"all"``) and MMBench's option rotation."""

    sqa_subset: str = "img"
    mmbench_all_rounds: bool = False


class Benchmark(ABC):
    """One benchmark. ``folder`` is its sub-folder of LLaVA's ``playground/data/eval``; the other paths are
    relative to that folder."""

    name: ClassVar[str]
    folder: ClassVar[str]
    question_file: ClassVar[str]
    image_folder: ClassVar[str] = ""
    annotation: ClassVar[tuple[str, ...]] = ()  # candidate ground-truth paths, first existing wins
    headline_name: ClassVar[str]

    def default_annotation(self, root: Path) -> Path | None:
        for candidate in self.annotation:
            if (root / candidate).exists():
                return root / candidate
        return root / self.annotation[0] if self.annotation else None

    @abstractmethod
    def load(self, files: BenchFiles, options: LoadOptions) -> list[EvalItem]:
        """The questions in file order (``ValueError`` names a malformed entry)."""

    @abstractmethod
    def score(self, items: list[EvalItem], answers: Answers, files: BenchFiles, out_dir: Path) -> BenchScore:
        """Score the answered questions: ``items`` in question order, ``answers`` by item key (only keys of
        ``items``; unanswered questions are simply absent and counted by the caller)."""
