"""``trio-vlm eval``: answer a benchmark resumably (optionally sharded across ranks), then score it."""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from trio_vlm import labels
from trio_vlm.eval.answering import Answerer
from trio_vlm.eval.benches import LoadOptions, get_benchmark
from trio_vlm.eval.reading.answers import index_answers, match_answers, read_answers
from trio_vlm.eval.reading.images import resolve_pad_square
from trio_vlm.eval.reading.items import EvalItem
from trio_vlm.eval.reading.paths import resolve_files
from trio_vlm.eval.reporting.report import build_report, write_report
from trio_vlm.eval.sharding import (
    MERGED,
    answer_files,
    collected_records,
    merge,
    rank_answers,
    shard,
    wait_until_complete,
    world_from_env,
)
from trio_vlm.generation import generation_kwargs
from trio_vlm.llava_format import append_line, finished_keys
from trio_vlm.loading import load_model_and_processor, model_id, model_shape
from trio_vlm.locks import exclusive
from trio_vlm.methods.request import MethodRequest
from trio_vlm.presets import ModelShape
from trio_vlm.prompts import check_conv_mode, resolve_conv_mode

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Everything one ``eval`` run needs (the CLI fills it; tests build it directly)."""

    bench: str
    data: Path
    output: Path
    model: str | None = None  # None: the bundled tiny random checkpoint
    method: MethodRequest = field(default_factory=lambda: MethodRequest("vanilla"))
    conv_mode: str = "auto"
    max_new_tokens: int = 128
    temperature: float = 0.0
    pad_square: bool | None = None  # None: the family's reference choice (LLaVA-1.5 pads, the others do not)
    device: str = "cpu"
    dtype: str = "auto"
    device_map: str | None = None
    question_file: Path | None = None
    image_folder: Path | None = None
    annotation: Path | None = None
    load: LoadOptions = field(default_factory=LoadOptions)
    limit: int | None = None
    skip_missing_images: bool = False
    score_only: bool = False
    answers_file: Path | None = None  # score an existing answers file (e.g. from LLaVA's scripts)
    world_size: int | None = None  # None: WORLD_SIZE / RANK from the environment
    rank: int | None = None
    merge_timeout: float = 24 * 3600.0
    poll_seconds: float = 5.0


def _model_path(config: EvalConfig) -> str:
    if config.model is not None:
        return config.model
    from trio_vlm.bundled import default_model_dir

    return str(default_model_dir())


def _device(config: EvalConfig, world: int) -> str:
    """One GPU per rank: a bare ``cuda`` becomes ``cuda:$LOCAL_RANK`` when sharded."""
    if world > 1 and config.device == "cuda" and config.device_map is None:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return config.device


def check_images(items: list[EvalItem], skip: bool) -> dict[tuple[str, str], str]:
    """Every image problem of ``items`` (missing, unreadable, corrupt) by question key, found before any answer
    is generated: an error naming the first (and the count) unless ``skip``."""
    problems = {item.key: why for item in items if (why := item.image_problem()) is not None}
    if problems and not skip:
        item = next(i for i in items if i.key in problems)
        error = FileNotFoundError if "not found" in problems[item.key] else ValueError
        raise error(
            f"{problems[item.key]} ({item.source}); {len(problems)} question(s) affected in all. Fix the data, "
            "or pass --skip-missing-images to skip them (they are counted in the scores)"
        )
    for item in items:
        if item.key in problems:
            logger.warning("skipping question %s: %s (%s)", item.question_id, problems[item.key], item.source)
    return problems


def _check_same_run(records: dict[tuple[str, str], dict[str, Any]], run: dict[str, Any], out: Path) -> None:
    """Resuming must continue the same configuration: refuse to mix answers of different runs."""
    for record in records.values():
        previous = (record.get("metadata") or {}).get("run")
        if previous != run:
            raise ValueError(
                f"{out} already holds answers from a different run (question {record['question_id']!r} was "
                f"answered with {previous!r}, this run is {run!r}); use another --output folder"
            )


def run_signature(config: EvalConfig, model_path: str, shape: ModelShape) -> tuple[dict[str, Any], Any]:
    """What an answer depends on (stored in every line and compared on resume), and the method itself.

    The schedule recorded is the one actually run (the preset fitted to this model) with its average visual
    tokens per decoder layer; every answer's measured average must equal it (:class:`Answerer`)."""
    method = config.method.build(shape)
    request = config.method
    budget = None if request.is_vanilla else (request.budget or 64)
    average = method.average_tokens(shape.num_layers, shape.visual)
    run = {
        "model": model_id(model_path),
        "family": shape.family,
        "method": request.name,
        "budget": budget,
        "mode": request.mode,
        "setting": labels.setting(method, budget, shape.visual_tokens),
        "schedule": method.describe(),
        "avg_visual_tokens": None if shape.variable else round(average, 4),
        "conv_mode": resolve_conv_mode(config.conv_mode, shape.family),
        "max_new_tokens": config.max_new_tokens,
        "temperature": config.temperature,
        "pad_square": resolve_pad_square(config.pad_square, shape.family),
    }
    return run, method


def answer_shard(
    config: EvalConfig, todo_all: list[EvalItem], world: int, rank: int, problems: dict[tuple[str, str], str]
) -> int:
    """Answer this rank's share of ``todo_all`` not yet in any answer file (skipping ``problems``, unreadable
    images); returns how many were added. One writer per rank file (:func:`trio_vlm.locks.exclusive`)."""
    out = config.output
    mine = shard(todo_all, world, rank)
    own_file = rank_answers(out, world, rank)
    with exclusive(own_file):
        return _answer(config, mine, own_file, world, rank, problems)


def _answer(
    config: EvalConfig,
    mine: list[EvalItem],
    own_file: Path,
    world: int,
    rank: int,
    problems: dict[tuple[str, str], str],
) -> int:
    """The answering loop of :func:`answer_shard` (under the rank file's lock)."""
    out = config.output
    done = finished_keys(own_file) | set(collected_records(out))
    todo = [item for item in mine if item.key not in done and item.key not in problems]
    logger.info("rank %d/%d: %d questions, %d to answer", rank, world, len(mine), len(todo))
    path = _model_path(config)
    shape = model_shape(path)
    run, method = run_signature(config, path, shape)
    _check_same_run(collected_records(out), run, out)
    if not todo:
        return 0
    model, processor = load_model_and_processor(
        path, _device(config, world), config.dtype, device_map=config.device_map
    )
    gen = generation_kwargs(config.max_new_tokens, config.temperature)
    answerer = Answerer(
        model,
        processor,
        method,
        gen,
        run["conv_mode"],
        run["pad_square"],
        model_id(path),
        run,
        planned_average=run["avg_visual_tokens"],
    )
    with own_file.open("a", encoding="utf-8") as fh:
        for item in tqdm(todo, desc=f"{config.bench} (rank {rank})" if world > 1 else config.bench, unit="q"):
            append_line(fh, answerer(item))
    return len(todo)


def run_eval(config: EvalConfig) -> dict[str, Any] | None:
    """Answer (unless scoring only) and, on rank 0, merge and score; returns the report on rank 0."""
    if config.world_size is None:
        world, rank = world_from_env()
    else:
        world, rank = config.world_size, config.rank or 0
    if config.limit is not None and config.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {config.limit}")
    check_conv_mode(config.conv_mode)  # an unknown conversation mode fails before any work
    bench = get_benchmark(config.bench)
    files = resolve_files(
        bench,
        config.data,
        question_file=config.question_file,
        image_folder=config.image_folder,
        annotation=config.annotation,
    )
    items = bench.load(files, config.load)
    todo_all = items[: config.limit] if config.limit is not None else items
    problems = (
        {} if config.score_only or config.answers_file else check_images(todo_all, config.skip_missing_images)
    )
    config.output.mkdir(parents=True, exist_ok=True)

    if config.answers_file is None and not config.score_only:
        answer_shard(config, todo_all, world, rank, problems)
    if rank != 0:
        return None
    with exclusive(config.output / MERGED) if world > 1 or config.score_only else nullcontext():
        if config.answers_file is not None:
            records = index_answers(read_answers(config.answers_file, tolerate_partial_tail=False))
            source = config.answers_file
        else:
            # rank 0 waits for every question to do whose image is readable (the others are skipped)
            expected = (
                [] if config.score_only else [item.key for item in todo_all if item.key not in problems]
            )
            records = wait_until_complete(config.output, expected, config.merge_timeout, config.poll_seconds)
            source = merge(config.output, records, [item.key for item in items])
        answers_by_key = {item.key: record for item, record in match_answers(items, records, source)}
        score = bench.score(items, answers_by_key, files, config.output)
        report = build_report(bench, files, items, todo_all, answers_by_key, score, source, problems)
        write_report(config.output, report)
    return report


__all__ = ["EvalConfig", "answer_files", "run_eval"]
