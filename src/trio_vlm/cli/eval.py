"""``trio-vlm eval``: answer one of the paper's benchmarks from LLaVA's files and score it locally."""

from __future__ import annotations

import argparse
from pathlib import Path

from trio_vlm.cli.options import (
    add_device_arguments,
    add_method_arguments,
    add_pad_arguments,
    check_device,
    method_request,
)
from trio_vlm.eval.benches import BENCHMARKS, LoadOptions
from trio_vlm.eval.runner import EvalConfig, run_eval


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trio-vlm eval``."""
    parser.add_argument("--bench", required=True, choices=list(BENCHMARKS), help="benchmark")
    parser.add_argument(
        "--data", required=True, help="LLaVA's playground/data/eval, or the benchmark's folder"
    )
    parser.add_argument("--output", help="run folder (default eval_runs/<bench>/<model>/<method>)")
    parser.add_argument("--model", help="hub id or local path (default: the bundled tiny random model)")
    add_method_arguments(parser)
    gen = parser.add_argument_group("generation (the paper's evaluation defaults)")
    gen.add_argument(
        "--conv-mode", default="auto", help="auto (the family's), vicuna_v1, llava_hf, chat_template"
    )
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    add_pad_arguments(gen)
    add_device_arguments(parser.add_argument_group("devices (one GPU per rank under torchrun)"))
    files = parser.add_argument_group("files (override LLaVA's layout)")
    files.add_argument("--question-file")
    files.add_argument("--image-folder")
    files.add_argument("--annotation", help="ground-truth file or folder")
    files.add_argument(
        "--sqa-subset", choices=("img", "all"), default="img", help="ScienceQA questions to ask"
    )
    files.add_argument("--all-rounds", action="store_true", help="MMBench: also ask every option rotation")
    run = parser.add_argument_group("run control")
    run.add_argument("--limit", type=int, help="answer only the first N questions (scores say so)")
    run.add_argument("--skip-missing-images", action="store_true", help="skip and count unreadable images")
    run.add_argument("--score-only", action="store_true", help="score the answers already in --output")
    run.add_argument("--answers-file", help="score this existing answers file (e.g. from LLaVA's scripts)")
    run.add_argument(
        "--merge-timeout", type=float, default=24 * 3600.0, help="seconds rank 0 waits for the others"
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``eval`` command."""
    parser = subparsers.add_parser("eval", help="answer and score a benchmark (GQA, MMBench, MME, POPE, …)")
    add_arguments(parser)
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """Validate the options and build the run configuration."""
    request = method_request(args)
    check_device(args.device)
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0 (0 means greedy decoding), got {args.temperature}")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    output = args.output
    if output is None:
        model = Path((args.model or "tiny-llava").rstrip("/")).name
        budget = args.budget or 64
        label = (
            request.name
            if request.is_vanilla
            else f"{request.name}-{budget}" + (f"-{args.mode}" if args.mode else "")
        )
        output = Path("eval_runs") / args.bench / model / label
    return EvalConfig(
        bench=args.bench,
        data=Path(args.data),
        output=Path(output),
        model=args.model,
        method=request,
        conv_mode=args.conv_mode,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        pad_square=args.pad_square,
        device=args.device,
        dtype=args.dtype,
        device_map=args.device_map,
        question_file=Path(args.question_file) if args.question_file else None,
        image_folder=Path(args.image_folder) if args.image_folder else None,
        annotation=Path(args.annotation) if args.annotation else None,
        load=LoadOptions(sqa_subset=args.sqa_subset, mmbench_all_rounds=args.all_rounds),
        limit=args.limit,
        skip_missing_images=args.skip_missing_images,
        score_only=args.score_only,
        answers_file=Path(args.answers_file) if args.answers_file else None,
        merge_timeout=args.merge_timeout,
    )


def run(args: argparse.Namespace) -> int:
    """Run, then print the headline score and where the files are (rank 0 only)."""
    config = config_from_args(args)
    report = run_eval(config)
    if report is None:
        return 0
    counts = report["counts"]
    value = report["headline"]["value"]
    shown = "n/a (see notes)" if value is None else f"{value:.2f}"
    print(f"{report['bench']}: {report['headline']['name']} = {shown}")
    print(
        f"answered {counts['answered']} of {counts['questions']} questions "
        f"({counts['skipped']} skipped, {counts['missing']} missing)"
    )
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"answers: {report['files']['answers']}")
    print(f"scores: {config.output / 'scores.json'}")
    return 0
