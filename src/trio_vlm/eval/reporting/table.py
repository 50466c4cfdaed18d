"""Collect scored runs into the paper's table: methods × benchmarks plus Average (% of vanilla)."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trio_vlm.eval.benches import PAPER_COLUMNS
from trio_vlm.eval.reporting.paper_results import paper_rows
from trio_vlm.eval.reporting.report import SCORES
from trio_vlm.methods.registry import available_methods, method_class

logger = logging.getLogger(__name__)

COLUMNS = list(PAPER_COLUMNS.values())
#: Families in table order, and the family of the embedded paper table (LLaVA-1.5-7B).
FAMILY_ORDER = ("llava-1.5", "llava-next", "qwen2.5-vl")
PAPER_FAMILY = "llava-1.5"


def table_name(name: str) -> str:
    """A registered method's name in the paper's table (its display name if the paper has none)."""
    try:
        cls = method_class(name)
    except ValueError:
        return name
    return cls.paper_name or cls.display_name


def method_order() -> list[str]:
    """Table names in row order (the classes' ``table_order``)."""
    return [table_name(name) for name in available_methods()]


@dataclass(frozen=True)
class RunResult:
    """One ``scores.json``: which benchmark, model, method and setting, and the paper's number."""

    bench: str
    model: str
    family: str
    method: str
    setting: str
    avg_tokens: float | None
    value: float | None
    complete: bool
    path: Path


@dataclass
class Row:
    """One table row: a method in a setting, measured (with its model and family) or from the paper."""

    model: str
    family: str
    setting: str
    method: str
    source: str
    values: dict[str, float | None] = field(default_factory=dict)
    incomplete: set[str] = field(default_factory=set)
    average: float | None = None
    average_over: int | None = None  # benchmarks in a measured Average (None: all, as in the paper)


def find_scores(dirs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Every ``scores.json`` in or below ``dirs``; ``FileNotFoundError`` for a missing folder or none found."""
    found: dict[Path, None] = {}
    for d in dirs:
        path = Path(d)
        if path.is_file() and path.name == SCORES:
            found[path.resolve()] = None
            continue
        if not path.is_dir():
            raise FileNotFoundError(f"run folder not found: {path}")
        for scores in sorted(path.rglob(SCORES)):
            found[scores.resolve()] = None
    if not found:
        raise FileNotFoundError(f"no {SCORES} under {', '.join(map(str, dirs))}: run `trio-vlm eval` first")
    return list(found)


def load_result(path: Path) -> RunResult:
    """Read one report; ``ValueError`` names a file that is not a trio-vlm scores file."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        bench, headline = report["bench"], report["headline"]["value"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a trio-vlm scores file ({exc})") from exc
    if bench not in PAPER_COLUMNS:
        raise ValueError(f"{path}: unknown benchmark {bench!r}")
    run = report.get("run") or {}
    method = table_name(str(run.get("method", "unknown")))
    tokens = run.get("avg_visual_tokens")
    if tokens is None:  # variable-token families: the measured average over the answers
        tokens = (report.get("timing") or {}).get("avg_visual_tokens_measured")
    return RunResult(
        bench=bench,
        model=str(run.get("model", "unknown")),
        # scores written before runs recorded their family came from LLaVA-1.5 (the only family eval loaded)
        family=str(run.get("family", PAPER_FAMILY)),
        method=method,
        setting=str(run.get("setting", "unknown")),
        avg_tokens=tokens,
        value=headline,
        complete=bool(report.get("complete")),
        path=path,
    )


def measured_rows(results: Sequence[RunResult]) -> list[Row]:
    """Group results by (family, model, setting, method); a benchmark measured twice keeps the newer file."""
    rows: dict[tuple[str, str, str, str], Row] = {}
    chosen: dict[tuple[str, str, str, str, str], RunResult] = {}
    for result in results:
        key = (result.family, result.model, result.setting, result.method, result.bench)
        old = chosen.get(key)
        if old is not None:
            logger.warning("%s measured twice (%s, %s); using the newer", key, old.path, result.path)
            if old.path.stat().st_mtime > result.path.stat().st_mtime:
                continue
        chosen[key] = result
    for (family, model, setting, method, bench), result in chosen.items():
        row = rows.setdefault(
            (family, model, setting, method), Row(model, family, setting, method, "measured")
        )
        row.values[PAPER_COLUMNS[bench]] = result.value
        if not result.complete:
            row.incomplete.add(PAPER_COLUMNS[bench])
    return list(rows.values())


def relative_average(
    values: dict[str, float | None], vanilla: dict[str, float | None]
) -> tuple[float | None, int]:
    """Mean over benchmarks of value / vanilla value in percent, and how many benchmarks it covers (those
    both rows have, with a non-zero vanilla score)."""
    ratios = [
        values[c] / vanilla[c]  # type: ignore[operator]
        for c in COLUMNS
        if values.get(c) is not None and vanilla.get(c) not in (None, 0)
    ]
    return (100 * sum(ratios) / len(ratios) if ratios else None), len(ratios)


def _setting_order(setting: str) -> tuple[int, int, int]:
    match = re.search(r"\((\d+)\)", setting)
    budget = int(match.group(1)) if match else 0
    kind = 0 if setting.startswith("Upper") else 1 if setting.startswith("w/o") else 2
    return (0 if kind == 0 else 1, -budget, kind)


def _method_order(method: str) -> int:
    order = method_order()
    return order.index(method) if method in order else len(order)


def _paper_row(setting: str, method: str, paper: list[dict[str, str]]) -> Row | None:
    for entry in paper:
        same_setting = entry["setting"] == setting or (
            method == "Vanilla" and entry["setting"].startswith("Upper Bound")
        )
        if entry["method"] == method and same_setting:
            values = {c: float(entry[c]) if entry.get(c) not in (None, "", "–") else None for c in COLUMNS}
            average = entry.get("Average", "").rstrip("%")
            return Row(
                "paper",
                "",
                entry["setting"],
                method,
                "paper",
                values,
                average=float(average) if average else None,
            )
    return None


def _family_order(family: str) -> int:
    return FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)


def build_table(
    results: Sequence[RunResult],
    with_paper: bool = True,
    paper_csv: str | None = None,
    paper_family: str = PAPER_FAMILY,
) -> list[Row]:
    """Measured rows grouped by family and model (families side by side, in :data:`FAMILY_ORDER`), within a
    model sorted as the paper (setting, then method), with Average against the same model's vanilla row; each
    row of ``paper_family`` is followed by the paper's row for the same method and setting when there is one
    (the default paper table is LLaVA-1.5-7B's)."""
    rows = measured_rows(results)
    vanilla = {(row.family, row.model): row.values for row in rows if row.method == "Vanilla"}
    for row in rows:
        base = vanilla.get((row.family, row.model))
        if base is not None:
            row.average, row.average_over = relative_average(row.values, base)
    rows.sort(
        key=lambda r: (
            _family_order(r.family),
            r.family,
            r.model,
            _setting_order(r.setting),
            _method_order(r.method),
        )
    )
    if not with_paper:
        return rows
    paper = paper_rows(paper_csv) if paper_csv is not None else paper_rows()
    out: list[Row] = []
    for row in rows:
        out.append(row)
        if row.family != paper_family:
            continue
        reference = _paper_row(row.setting, row.method, paper)
        if reference is not None:
            out.append(reference)
    return out


def _cell(column: str, value: float | None, incomplete: bool) -> str:
    if value is None:
        return "–"
    text = f"{value:.0f}" if column == "MME" and float(value).is_integer() else f"{value:.1f}"
    return text + ("*" if incomplete else "")


def _average_cell(row: Row) -> str:
    if row.average is None:
        return "–"
    partial = row.average_over is not None and row.average_over < len(COLUMNS)
    return f"{row.average:.1f}%" + (f" ({row.average_over}/{len(COLUMNS)})" if partial else "")


def table_cells(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and cell strings; ``Family`` and ``Model`` columns appear only when rows come from several
    families or models."""
    measured = [row for row in rows if row.source == "measured"]
    with_family = len({row.family for row in measured}) > 1
    with_model = len({(row.family, row.model) for row in measured}) > 1
    header = (["Family"] if with_family else []) + (["Model"] if with_model else [])
    header += ["Setting", "Method", "Source", *COLUMNS, "Average"]
    body = []
    for row in rows:
        cells = [row.family or "paper"] if with_family else []
        cells += [row.model] if with_model else []
        cells += [row.setting, row.method, row.source]
        cells += [_cell(c, row.values.get(c), c in row.incomplete) for c in COLUMNS]
        cells.append(_average_cell(row))
        body.append(cells)
    return header, body


def to_markdown(rows: Sequence[Row]) -> str:
    """A GitHub Markdown table; ``*`` marks scores over an incomplete run."""
    header, body = table_cells(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    if any(row.incomplete for row in rows):
        lines.append("\n\\* scored on part of the questions (see that run's scores.json counts)")
    if any(row.average_over is not None and row.average_over < len(COLUMNS) for row in rows):
        lines.append(
            "\nAverage (k/8): over the k benchmarks that both the row and its model's vanilla row have "
            "(with a non-zero vanilla score)"
        )
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Row]) -> str:
    header, body = table_cells(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body)
    return buffer.getvalue()


def collect(dirs: Iterable[str | os.PathLike[str]]) -> list[RunResult]:
    return [load_result(path) for path in find_scores(dirs)]


def series(results: Sequence[RunResult]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """For plotting: ``{column: {method label: [(avg tokens, value), …] sorted by tokens}}``."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    several = len({r.family for r in results}) > 1
    for r in results:
        if r.value is None or r.avg_tokens is None:
            continue
        label = r.method if r.method == "Vanilla" else f"{r.method} {r.setting.split(' (')[0]}"
        label = f"{r.family}: {label}" if several else label
        out.setdefault(PAPER_COLUMNS[r.bench], {}).setdefault(label, []).append((r.avg_tokens, r.value))
    for per_method in out.values():
        for points in per_method.values():
            points.sort()
    return out


def as_dicts(rows: Sequence[Row]) -> list[dict[str, Any]]:
    header, body = table_cells(rows)
    return [dict(zip(header, cells)) for cells in body]
