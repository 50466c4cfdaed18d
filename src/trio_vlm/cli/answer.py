"""``trio-vlm answer``: answer one question about one image and show what was pruned."""

from __future__ import annotations

import argparse
import json

from trio_vlm.bundled import bundled_image_path, default_model_dir
from trio_vlm.cli.options import (
    add_device_arguments,
    add_generation_arguments,
    add_method_arguments,
    check_device,
    describe_method,
    generation_options,
    method_request,
)
from trio_vlm.generation import generate_answer
from trio_vlm.loading import load_image, load_model_and_processor
from trio_vlm.presets import shape_of
from trio_vlm.prompts import check_conv_mode, prompt_for, resolve_conv_mode

DEFAULT_QUESTION = "What is the colour of the shape on the left?"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``answer`` command."""
    parser = subparsers.add_parser("answer", help="answer one question about one image")
    parser.add_argument("--model", help="hub id or local folder (default: the bundled tiny random model)")
    parser.add_argument("--image", help="image file (default with the bundled model: the bundled image)")
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument(
        "--conv-mode", default="auto", help="vicuna_v1, llava_hf, chat_template, or auto (the model family's)"
    )
    add_generation_arguments(parser, max_new_tokens=32)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the text report"
    )
    add_device_arguments(parser)
    add_method_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Answer, then print the answer, the visual tokens kept per stage and the timings."""
    bundled = args.model is None
    if args.image is None and not bundled:
        raise ValueError("--image is required with --model")
    gen_kwargs = generation_options(args)
    check_conv_mode(args.conv_mode)
    check_device(args.device)
    request = method_request(args)
    image_path = bundled_image_path() if args.image is None else args.image
    image = load_image(image_path)
    model_dir = str(default_model_dir()) if bundled else args.model
    model, processor = load_model_and_processor(
        model_dir, device=args.device, dtype=args.dtype, device_map=args.device_map
    )
    shape = shape_of(model)
    method = request.build(shape)
    conv_mode = resolve_conv_mode(args.conv_mode, shape.family)
    prompt = prompt_for(args.question, conv_mode, processor)
    answer = generate_answer(model, processor, image, prompt, method, gen_kwargs)
    if args.json:
        print(
            json.dumps(
                {
                    "model": model_dir,
                    "family": shape.family,
                    "conv_mode": conv_mode,
                    "method": method.describe(),
                    "answer": answer.text,
                    **answer.record(),
                }
            )
        )
        return 0
    note = " (bundled tiny random LLaVA: its answers are gibberish)" if bundled else ""
    print(f"model: {model_dir}{note}")
    print(f"image: {image_path}" + (" (bundled)" if args.image is None else ""))
    print(f"method: {describe_method(method, shape)}")
    print(f"question: {args.question}")
    print(f"answer: {answer.text}")
    print("visual tokens kept:" + ("" if answer.stages else " all (no drops)"))
    calls = {s.call for s in answer.stages}
    for stage in answer.stages:
        prefix = f"call {stage.call}, " if len(calls) > 1 else ""
        print(f"  {prefix}{stage.label()}: {stage.before} -> {stage.after}")
    if answer.average_tokens is not None:
        print(f"measured average: {answer.average_tokens:.2f} visual tokens per decoder layer")
    prefill = "n/a" if answer.prefill_seconds is None else f"{answer.prefill_seconds:.4f} s"
    print(f"prefill time: {prefill}")
    print(f"total time: {answer.total_seconds:.4f} s")
    return 0
