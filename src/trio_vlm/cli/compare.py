"""``trio-vlm compare``: every registered method (plus vanilla) on one image and question, side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trio_vlm import compare
from trio_vlm.bundled import bundled_image_path, default_model_dir
from trio_vlm.cli.options import add_device_arguments, check_device
from trio_vlm.generation import generate, generation_kwargs, prepare_inputs
from trio_vlm.loading import load_image, load_model_and_processor
from trio_vlm.methods.registry import method_class
from trio_vlm.presets import DEFAULT_BUDGET, shape_of
from trio_vlm.prompts import check_conv_mode, prompt_for, resolve_conv_mode

DEFAULT_QUESTION = "What is the colour of the shape on the left?"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``compare`` command."""
    parser = subparsers.add_parser("compare", help="run every method on one image and compare them")
    parser.add_argument("--model", help="hub id or local folder (default: the bundled tiny random model)")
    parser.add_argument("--image", help="image file (default with the bundled model: the bundled image)")
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument("--conv-mode", default="auto")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    add_device_arguments(parser)
    parser.add_argument(
        "--budget", type=int, default=DEFAULT_BUDGET, help="average visual tokens per decoder layer"
    )
    parser.add_argument("--methods", default="all", help="'all' or comma-separated registered method names")
    parser.add_argument(
        "--encoder-method",
        help="run every LLM-side method after this method's encoder stage (e.g. visionzip)",
    )
    parser.add_argument(
        "--encoder-tokens", type=int, help="tokens kept by --encoder-method (default: 2 x budget)"
    )
    parser.add_argument("--plot", help="save a figure of each method's kept patches to this file (PNG)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> list[str]:
    names = compare.selected_names(args.methods)
    if args.budget < 1:
        raise ValueError(f"--budget must be >= 1, got {args.budget}")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.encoder_tokens is not None and args.encoder_method is None:
        raise ValueError("--encoder-tokens needs --encoder-method")
    if args.encoder_tokens is not None and args.encoder_tokens < 1:
        raise ValueError(f"--encoder-tokens must be >= 1, got {args.encoder_tokens}")
    if args.encoder_method is not None:
        method_class(args.encoder_method)
    if args.image is None and args.model is not None:
        raise ValueError("--image is required with --model")
    check_conv_mode(args.conv_mode)
    check_device(args.device)
    return names


def run(args: argparse.Namespace) -> int:
    """Run vanilla and every selected method; print the table and optionally save the kept-token figure."""
    names = _check_args(args)
    bundled = args.model is None
    model_dir = str(default_model_dir()) if bundled else args.model
    image_path = bundled_image_path() if args.image is None else args.image
    image = load_image(image_path)
    model, processor = load_model_and_processor(
        model_dir, device=args.device, dtype=args.dtype, device_map=args.device_map
    )
    shape = shape_of(model)
    candidates = compare.build_candidates(
        names, shape, args.budget, encoder_method=args.encoder_method, encoder_tokens=args.encoder_tokens
    )
    prompt = prompt_for(args.question, resolve_conv_mode(args.conv_mode, shape.family), processor)
    inputs = prepare_inputs(model, processor, image, prompt)
    generate(model, inputs, generation_kwargs(1))  # warm-up, so the first timed row pays no start-up cost
    results = compare.run_all(candidates, model, processor, inputs, generation_kwargs(args.max_new_tokens))
    note = " (bundled tiny random LLaVA: answers are gibberish)" if bundled else ""
    print(f"model: {model_dir}{note}")
    print(f"image: {image_path}")
    print(f"question: {args.question}")
    fitted = (
        f"{shape.num_layers} layers, the same share of each image's tokens as {args.budget} of 576"
        if shape.variable
        else f"{shape.num_layers} layers, {shape.visual} tokens"
    )
    print(f"budget: {args.budget} visual tokens per layer (presets fitted to {fitted})")
    print(compare.table(results))
    if args.json:
        Path(args.json).write_text(
            json.dumps([r.to_dict() for r in results], indent=1) + "\n", encoding="utf-8"
        )
        print(f"json: {args.json}")
    if args.plot:
        if shape.variable:
            raise ValueError(
                "--plot draws square patch grids (LLaVA-1.5); this model has variable image tokens"
            )
        image_processor = getattr(processor, "image_processor", None)
        view = compare.model_view(
            inputs["pixel_values"][0],
            getattr(image_processor, "image_mean", None),
            getattr(image_processor, "image_std", None),
        )
        panels = [(r.label, r.kept) for r in results if r.error is None]
        print(f"plot: {compare.plot_kept_tokens(view, panels, shape.visual, args.plot)}")
    return 0
