"""``trio-vlm answer``: answer one question about one image and show what was pruned."""

from __future__ import annotations

import argparse
import logging

from transformers import AutoConfig

from trio_vlm.bundled import bundled_image_path, default_model_dir
from trio_vlm.cli.generation import generate_answer, generation_kwargs
from trio_vlm.cli.schedule_args import add_schedule_arguments, build_method, schedule_summary, uses_preset
from trio_vlm.loading import default_conv_mode, load_image, load_model_and_processor, prompt_for

logger = logging.getLogger(__name__)

DEFAULT_QUESTION = "What is the colour of the shape on the left?"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``answer`` command."""
    parser = subparsers.add_parser("answer", help="answer one question about one image")
    parser.add_argument("--model", help="hub id or local path (default: the bundled tiny random model)")
    parser.add_argument("--image", help="image file (default with the bundled model: the bundled image)")
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument(
        "--conv-mode", default="auto", help="vicuna_v1, llava_hf, chat_template, or auto (the model family's)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    add_schedule_arguments(parser)
    parser.set_defaults(func=run)


def _bundled_shape(model_dir: str) -> tuple[int, int]:
    """Decoder layers and visual tokens per image of the bundled model, for scaling presets."""
    config = AutoConfig.from_pretrained(model_dir)
    return config.text_config.num_hidden_layers, config.image_seq_length


def run(args: argparse.Namespace) -> int:
    """Answer, then print the answer, the visual tokens kept per stage and the timings."""
    bundled = args.model is None
    if args.image is None and not bundled:
        raise ValueError("--image is required with --model")
    if bundled:
        model_dir = str(default_model_dir())
        print(f"model: {model_dir} (bundled tiny random LLaVA: its answers are gibberish)")
        method = build_method(args, scale_to=_bundled_shape(model_dir))
    else:
        model_dir = args.model
        print(f"model: {model_dir}")
        method = build_method(args)
    image_path = bundled_image_path() if args.image is None else args.image
    print(f"image: {image_path}" + (" (bundled)" if args.image is None else ""))
    image = load_image(image_path)
    model, processor = load_model_and_processor(model_dir, device=args.device, dtype=args.dtype)
    conv_mode = default_conv_mode(model) if args.conv_mode == "auto" else args.conv_mode
    prompt = prompt_for(args.question, conv_mode, processor)

    answer = generate_answer(model, processor, image, prompt, method, generation_kwargs(args.max_new_tokens))
    summary = schedule_summary(method)
    if method is None:
        print("method: vanilla (no pruning)")
    else:
        lists = ", ".join(f"{key}={value}" for key, value in summary.items() if key != "method")
        note = " (preset scaled to the tiny model)" if bundled and uses_preset(args) else ""
        print(f"method: {summary['method']}({lists}){note}")
    print(f"question: {args.question}")
    print(f"answer: {answer.text}")
    print("visual tokens kept:" + ("" if answer.stages else " all (no drops)"))
    calls = {s.call for s in answer.stages}
    for stage in answer.stages:
        prefix = f"call {stage.call}, " if len(calls) > 1 else ""
        print(f"  {prefix}{stage.label()}: {stage.before} -> {stage.after}")
    prefill = "n/a" if answer.prefill_seconds is None else f"{answer.prefill_seconds:.4f} s"
    print(f"prefill time: {prefill}")
    print(f"total time: {answer.total_seconds:.4f} s")
    return 0
