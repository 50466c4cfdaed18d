"""``trio-vlm answer-file``: answer a LLaVA question file (as LLaVA's ``model_vqa_loader.py``), resumably."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tqdm import tqdm

from trio_vlm.cli.options import (
    add_device_arguments,
    add_generation_arguments,
    add_method_arguments,
    add_pad_arguments,
    check_device,
    generation_options,
    method_request,
)
from trio_vlm.eval.reading.images import prepare_image, resolve_pad_square, square_fill
from trio_vlm.generation import generate_answer
from trio_vlm.llava_format import (
    Question,
    answer_id,
    append_line,
    chunk,
    finished_keys,
    read_questions,
)
from trio_vlm.loading import image_problem, load_image, load_model_and_processor, model_id
from trio_vlm.locks import exclusive
from trio_vlm.presets import shape_of
from trio_vlm.prompts import check_conv_mode, prompt_for, resolve_conv_mode

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``answer-file`` command."""
    parser = subparsers.add_parser(
        "answer-file", help="answer a JSONL question file into a JSONL answers file"
    )
    parser.add_argument("--model", "--model-path", dest="model", required=True, help="hub id or local folder")
    parser.add_argument("--question-file", required=True, help="JSONL lines with question_id, image, text")
    parser.add_argument(
        "--image-folder", default="", help="folder the questions' image paths are relative to"
    )
    parser.add_argument("--answers-file", required=True, help="JSONL output; existing answers are kept")
    parser.add_argument("--conv-mode", default="auto", help="vicuna_v1, llava_hf, chat_template, auto")
    add_generation_arguments(parser, max_new_tokens=128)
    parser.add_argument("--num-chunks", type=int, default=1)
    parser.add_argument("--chunk-idx", type=int, default=0)
    parser.add_argument(
        "--skip-missing-images",
        action="store_true",
        help="skip questions whose image is missing or unreadable (listed in <answers-file>.skipped.json)",
    )
    add_pad_arguments(parser)
    add_device_arguments(parser)
    add_method_arguments(parser)
    parser.set_defaults(func=run)


def _image_path(folder: str, question: Question) -> Path:
    return Path(folder) / question.image


def _check_images(args: argparse.Namespace, questions: list[Question]) -> dict[tuple[str, str], str]:
    """Every image problem, found before any answer: an error naming the first unless --skip-missing-images."""
    problems = {
        q.key: why for q in questions if (why := image_problem(_image_path(args.image_folder, q))) is not None
    }
    if problems and not args.skip_missing_images:
        q = next(q for q in questions if q.key in problems)
        error = FileNotFoundError if "not found" in problems[q.key] else ValueError
        raise error(
            f"{problems[q.key]} ({args.question_file}:{q.line}; {len(problems)} question(s) affected in all); fix "
            "the data or pass --skip-missing-images"
        )
    return problems


def run(args: argparse.Namespace) -> int:
    """Validate everything, then answer every question not yet in the answers file, one flushed line each.

    Nothing is written when validation fails; one process writes an answers file at a time (a second one is
    refused); an interrupted run resumes where it stopped (finished answers are kept, none is written twice).
    """
    request = method_request(args)
    gen_kwargs = generation_options(args)
    check_conv_mode(args.conv_mode)
    check_device(args.device)
    questions = chunk(read_questions(args.question_file), args.num_chunks, args.chunk_idx)
    answers_path = Path(args.answers_file)
    if answers_path.exists() and not answers_path.is_file():
        raise ValueError(f"--answers-file {answers_path} is not a regular file; give a file path")
    problems = _check_images(args, questions)
    answers_path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(answers_path):
        done = finished_keys(answers_path)
        todo = [q for q in questions if q.key not in done and q.key not in problems]
        logger.info("%d questions, %d already answered, %d to do", len(questions), len(done), len(todo))
        if problems:
            skipped = [
                {"question_id": q.question_id, "reason": problems[q.key]}
                for q in questions
                if q.key in problems
            ]
            Path(f"{answers_path}.skipped.json").write_text(
                json.dumps(skipped, indent=1) + "\n", encoding="utf-8"
            )
            print(
                f"skipped {len(skipped)} question(s) with unreadable images (listed in {answers_path}.skipped.json)"
            )
        if not todo:
            return 0
        model, processor = load_model_and_processor(
            args.model, device=args.device, dtype=args.dtype, device_map=args.device_map
        )
        shape = shape_of(model)
        method = request.build(shape)
        conv_mode = resolve_conv_mode(args.conv_mode, shape.family)
        pad_square = resolve_pad_square(args.pad_square, shape.family)
        fill = square_fill(processor, pad_square)
        schedule = method.describe()
        run = {"family": shape.family, "schedule": schedule, "conv_mode": conv_mode, "pad_square": pad_square}
        with answers_path.open("a", encoding="utf-8") as fh:
            for question in tqdm(todo, desc="answering", unit="q"):
                image = prepare_image(load_image(_image_path(args.image_folder, question)), fill)
                prompt = prompt_for(question.text, conv_mode, processor)
                answer = generate_answer(model, processor, image, prompt, method, gen_kwargs)
                record = {
                    "question_id": question.question_id,
                    "prompt": question.text,
                    "text": answer.text,
                    "answer_id": answer_id(
                        model_id(args.model), schedule, question.question_id, question.text
                    ),
                    "model_id": model_id(args.model),
                    "metadata": {**run, **answer.record()},
                }
                append_line(fh, record)
    return 0
