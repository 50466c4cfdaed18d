"""The scored JSON of a run: headline, every metric, counts of what was answered, skipped or missing."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from trio_vlm.eval.benches import BenchFiles, Benchmark, BenchScore
from trio_vlm.eval.reading.items import EvalItem

logger = logging.getLogger(__name__)

SCORES = "scores.json"


def consensus_run(answers: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any] | None:
    """The run configuration every answer carries; ``ValueError`` if answers disagree; ``None`` if they
    carry none (answers files written by LLaVA's own scripts)."""
    runs = [(r.get("metadata") or {}).get("run") for r in answers.values()]
    distinct = {json.dumps(run, sort_keys=True) for run in runs}
    if len(distinct) > 1:
        raise ValueError(
            f"the answers come from {len(distinct)} different run configurations; score them apart"
        )
    return runs[0] if runs else None


def _timing(answers: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    averages = [
        m["avg_visual_tokens"]
        for r in answers.values()
        if (m := r.get("metadata") or {}).get("avg_visual_tokens") is not None
    ]
    prefill = [
        m["prefill_seconds"]
        for r in answers.values()
        if (m := r.get("metadata") or {}).get("prefill_seconds")
    ]
    total = [
        m["total_seconds"] for r in answers.values() if (m := r.get("metadata") or {}).get("total_seconds")
    ]
    return {
        "prefill_seconds_sum": sum(prefill),
        "total_seconds_sum": sum(total),
        "timed_answers": len(total),
        "avg_visual_tokens_measured": sum(averages) / len(averages) if averages else None,
    }


def build_report(
    bench: Benchmark,
    files: BenchFiles,
    items: list[EvalItem],
    selected: list[EvalItem],
    answers: dict[tuple[str, str], dict[str, Any]],
    score: BenchScore,
    answers_path: str | os.PathLike[str],
    problems: dict[tuple[str, str], str] | None = None,
) -> dict[str, Any]:
    """Assemble ``scores.json``. Unanswered questions are never scored as anything: they are counted as
    ``skipped`` (unreadable image, with the reason from ``problems``) or ``missing`` (not answered yet), and ``complete``
    says whether the score covers the whole question file."""
    unanswered = [item for item in selected if item.key not in answers]
    problems = problems or {}
    skipped = [(item, problems[item.key]) for item in unanswered if item.key in problems]
    counts = {
        "questions": len(items),
        "selected": len(selected),
        "answered": len(answers),
        "skipped": len(skipped),
        "missing": len(unanswered) - len(skipped),
        "not_selected": len(items) - len(selected),
    }
    complete = counts["answered"] == len(items)
    run = consensus_run(answers)
    notes = list(score.notes)
    if run is None:
        notes.append("the answers carry no trio-vlm run metadata (written by another tool)")
    if not complete:
        message = (
            f"{bench.name}: scored {counts['answered']} of {len(items)} questions "
            f"({counts['skipped']} skipped, {counts['missing']} missing, {counts['not_selected']} not selected)"
        )
        logger.warning(message)
        notes.append(message)
    return {
        "bench": bench.name,
        "headline": {"name": bench.headline_name, "value": score.headline},
        "metrics": score.metrics,
        "complete": complete,
        "counts": counts,
        "skipped": [{"question_id": item.question_id, "reason": why} for item, why in skipped],
        "run": run,
        "timing": _timing(answers),
        "notes": notes,
        "files": {
            "answers": str(answers_path),
            "questions": str(files.question_file),
            "annotation": str(files.annotation) if files.annotation else None,
            **score.outputs,
        },
    }


def write_report(out_dir: Path, report: dict[str, Any]) -> Path:
    """Write ``scores.json`` atomically."""
    path = out_dir / SCORES
    tmp = out_dir / (SCORES + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
