"""``trio-vlm compare``: every registered method (plus vanilla) on one image and question, side by side."""

from __future__ import annotations

import argparse
import logging

from tqdm import tqdm
from transformers import AutoConfig

from trio_vlm.adapters import adapter_for
from trio_vlm.bundled import bundled_image_path, default_model_dir
from trio_vlm.cli.compare_methods import Candidate, build_candidates, selected_names
from trio_vlm.cli.compare_run import MethodResult, generate_ids, run_method
from trio_vlm.cli.generation import generation_kwargs
from trio_vlm.cli.schedule_args import DEFAULT_BUDGET, DEFAULT_PRESET
from trio_vlm.loading import load_image, load_model_and_processor, prompt_for
from trio_vlm.methods.fixed import Vanilla
from trio_vlm.methods.registry import method_class

logger = logging.getLogger(__name__)

DEFAULT_QUESTION = "What is the colour of the shape on the left?"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``compare`` command."""
    parser = subparsers.add_parser("compare", help="run every method on one image and compare them")
    parser.add_argument("--model", help="hub id or local path (default: the bundled tiny random model)")
    parser.add_argument("--image", help="image file (default with the bundled model: the bundled image)")
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument("--conv-mode", default="vicuna_v1")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="model family the budget presets target")
    parser.add_argument(
        "--budget", type=int, default=DEFAULT_BUDGET, help="average visual tokens per layer (LLaVA-1.5 units)"
    )
    parser.add_argument("--methods", default="all", help="'all' or comma-separated registered method names")
    parser.add_argument(
        "--encoder-method",
        help="run every LLM-side method after this method's encoder stage (e.g. visionzip)",
    )
    parser.add_argument(
        "--encoder-tokens", type=int, help="tokens kept by --encoder-method (default: 2 x budget, max 576)"
    )
    parser.add_argument("--plot", help="save a figure of each method's kept patches to this file (PNG)")
    parser.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> list[str]:
    names = selected_names(args.methods)
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
    return names


def _table(results: list[MethodResult]) -> str:
    head = ("method", "avg tokens/layer", "tokens per stage", "prefill (s)", "answer")
    rows = [head]
    for r in results:
        avg = "-" if r.average_tokens is None else f"{r.average_tokens:.1f}"
        prefill = "-" if r.prefill_seconds is None else f"{r.prefill_seconds:.4f}"
        answer = f"({r.error})" if r.error else " ".join(r.answer.split())
        rows.append((r.label, avg, r.stage_text(), prefill, answer))
    widths = [max(len(row[c]) for row in rows) for c in range(len(head) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _run_all(
    candidates: list[Candidate], model, processor, inputs, gen, num_visual: int
) -> list[MethodResult]:
    results = []
    rows = [Candidate("vanilla", Vanilla()), *candidates]
    for cand in tqdm(rows, desc="methods", unit="method", leave=False):
        if cand.method is None:
            results.append(MethodResult(cand.label, error=f"skipped: {cand.skipped}"))
            continue
        try:
            results.append(run_method(cand.label, cand.method, model, processor, inputs, gen, num_visual))
        except (RuntimeError, ValueError, IndexError, KeyError) as exc:
            logger.warning("%s failed: %s", cand.label, exc)
            logger.debug("traceback of %s", cand.label, exc_info=True)
            results.append(MethodResult(cand.label, error=f"failed: {exc}"))
    return results


def run(args: argparse.Namespace) -> int:
    """Run vanilla and every selected method; print the table and optionally save the kept-token figure."""
    names = _check_args(args)
    bundled = args.model is None
    model_dir = str(default_model_dir()) if bundled else args.model
    scale_to = None
    if bundled:
        config = AutoConfig.from_pretrained(model_dir)
        scale_to = (config.text_config.num_hidden_layers, config.image_seq_length)
    candidates = build_candidates(
        names,
        args.preset,
        args.budget,
        encoder_method=args.encoder_method,
        encoder_tokens=args.encoder_tokens,
        scale_to=scale_to,
    )
    image_path = bundled_image_path() if args.image is None else args.image
    image = load_image(image_path)
    model, processor = load_model_and_processor(model_dir, device=args.device, dtype=args.dtype)
    prompt = prompt_for(args.question, args.conv_mode)
    inputs = processor(images=image, text=prompt, return_tensors="pt").to(
        device=model.device, dtype=model.dtype
    )
    num_visual = int(adapter_for(model).tokens_per_image)
    gen = generation_kwargs(args.max_new_tokens)
    generate_ids(model, inputs, generation_kwargs(1))  # warm-up, so the first timed row pays no start-up cost

    results = _run_all(candidates, model, processor, inputs, gen, num_visual)
    note = " (bundled tiny random LLaVA: answers are gibberish; presets scaled to it)" if bundled else ""
    print(f"model: {model_dir}{note}")
    print(f"image: {image_path}")
    print(f"question: {args.question}")
    print(f"budget: {args.budget} visual tokens per layer ({args.preset} preset)")
    print(_table(results))
    if args.plot:
        from trio_vlm.cli.compare_plot import model_view, plot_kept_tokens

        image_processor = getattr(processor, "image_processor", None)
        view = model_view(
            inputs["pixel_values"][0],
            getattr(image_processor, "image_mean", None),
            getattr(image_processor, "image_std", None),
        )
        panels = [(r.label, r.kept) for r in results if r.error is None]
        print(f"plot: {plot_kept_tokens(view, panels, num_visual, args.plot)}")
    return 0
