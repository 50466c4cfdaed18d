"""``trio-vlm answer-file``: answer a LLaVA question file (as LLaVA's ``model_vqa_loader.py``), resumably."""

from __future__ import annotations

import argparse
import logging
import uuid
from pathlib import Path

from tqdm import tqdm

from trio_vlm.cli.options import (
    add_device_arguments,
    add_method_arguments,
    add_pad_arguments,
    method_request,
)
from trio_vlm.eval.reading.images import prepare_image, resolve_pad_square, square_fill
from trio_vlm.generation import generate_answer, generation_kwargs
from trio_vlm.llava_format import Question, append_line, chunk, finished_keys, read_questions
from trio_vlm.loading import load_image, load_model_and_processor, model_id
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
    parser.add_argument("--temperature", type=float, default=0.0, help="0 means greedy decoding")
    parser.add_argument("--top-p", "--top_p", dest="top_p", type=float)
    parser.add_argument("--num-beams", "--num_beams", dest="num_beams", type=int, default=1)
    parser.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=int, default=128)
    parser.add_argument("--num-chunks", type=int, default=1)
    parser.add_argument("--chunk-idx", type=int, default=0)
    add_pad_arguments(parser)
    add_device_arguments(parser)
    add_method_arguments(parser)
    parser.set_defaults(func=run)


def _image_path(folder: str, question: Question) -> Path:
    return Path(folder) / question.image


def run(args: argparse.Namespace) -> int:
    """Answer every question not yet in the answers file, one flushed line each."""
    request = method_request(args)
    check_conv_mode(args.conv_mode)
    questions = chunk(read_questions(args.question_file), args.num_chunks, args.chunk_idx)
    missing = [q for q in questions if not _image_path(args.image_folder, q).is_file()]
    if missing:
        q = missing[0]
        raise FileNotFoundError(
            f"image file not found: {_image_path(args.image_folder, q)} "
            f"({args.question_file}:{q.line}; {len(missing)} missing in all)"
        )
    answers_path = Path(args.answers_file)
    answers_path.parent.mkdir(parents=True, exist_ok=True)
    done = finished_keys(answers_path)
    todo = [q for q in questions if q.key not in done]
    logger.info(
        "%d questions, %d already answered, %d to do", len(questions), len(questions) - len(todo), len(todo)
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
    gen_kwargs = generation_kwargs(args.max_new_tokens, args.temperature, args.top_p, args.num_beams)
    run = {
        "family": shape.family,
        "schedule": method.describe(),
        "conv_mode": conv_mode,
        "pad_square": pad_square,
    }
    with answers_path.open("a", encoding="utf-8") as fh:
        for question in tqdm(todo, desc="answering", unit="q"):
            image = prepare_image(load_image(_image_path(args.image_folder, question)), fill)
            prompt = prompt_for(question.text, conv_mode, processor)
            answer = generate_answer(model, processor, image, prompt, method, gen_kwargs)
            record = {
                "question_id": question.question_id,
                "prompt": question.text,
                "text": answer.text,
                "answer_id": uuid.uuid4().hex,
                "model_id": model_id(args.model),
                "metadata": {**run, **answer.record()},
            }
            append_line(fh, record)
    return 0
