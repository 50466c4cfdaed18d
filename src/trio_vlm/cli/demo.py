"""``trio-vlm demo``: the bundled testbed model answers a few held-out questions, vanilla and TRIO side by side,
and a PNG shows which visual tokens TRIO and two baselines kept."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DEMO_SEED = 3  # a question stream of its own, disjoint from training, validation and the held-out table
DEFAULT_BASELINES = "fastv,visionzip"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` command."""
    parser = subparsers.add_parser(
        "demo", help="vanilla vs. TRIO on the bundled trained testbed model (or --model DIR)"
    )
    parser.add_argument("--model", help="testbed checkpoint directory (default: the bundled one)")
    parser.add_argument("--questions", type=int, default=6, help="how many questions (one per kind first)")
    parser.add_argument("--budget", type=int, default=64, help="average visual tokens per layer")
    parser.add_argument(
        "--mode", choices=("w_ve", "wo_ve"), default="w_ve", help="TRIO with/without encoder stage"
    )
    parser.add_argument(
        "--baselines", default=DEFAULT_BASELINES, help="two registered methods for the overlay"
    )
    parser.add_argument("--plot", default="demo_kept_tokens.png", help="kept-token overlay PNG ('' for none)")
    parser.set_defaults(func=run)


def _stages(stages: list[tuple[str | int, int, int]]) -> str:
    if not stages:
        return "576 tokens"
    return " -> ".join([str(stages[0][1]), *(str(after) for _, _, after in stages)]) + " tokens"


def run(args: argparse.Namespace) -> int:
    """Answer the demo questions with vanilla and TRIO, print them side by side and save the overlay."""
    from trio_vlm.cli.testbed_eval import parse_methods
    from trio_vlm.labels import variant
    from trio_vlm.loading import load_model_and_processor
    from trio_vlm.methods.request import MethodRequest
    from trio_vlm.overlay import save_overlay
    from trio_vlm.presets import shape_of
    from trio_vlm.testbed import bundled_model_dir
    from trio_vlm.testbed.evaluate import predict
    from trio_vlm.testbed.generator import benchmark

    if args.questions < 1:
        raise ValueError(f"--questions must be >= 1, got {args.questions}")
    baselines = parse_methods(args.baselines) or []
    if len(baselines) != 2:
        raise ValueError(f"--baselines needs exactly two method names, got {args.baselines!r}")
    model_dir = Path(args.model) if args.model else bundled_model_dir()
    model, processor = load_model_and_processor(model_dir)
    shape = shape_of(model)
    layers, num_visual = shape.num_layers, shape.visual
    trio = MethodRequest("trio", args.budget, args.mode).build(shape)
    others = [(name, MethodRequest(name, args.budget).build(shape)) for name in baselines]
    sched = trio.schedule()
    trio_label = f"{variant('trio', args.mode)}-{args.budget}"
    print(f"model: {model_dir} (LLaVA-1.5 geometry: {num_visual} visual tokens, {layers} decoder layers)")
    print(
        f"{trio_label}: visual_token_num={sched.visual_token_num}, layer_list={list(sched.layer_list)}, "
        f"image_token_list={list(sched.image_token_list)} "
        f"(average {trio.average_tokens(layers, num_visual):.1f} visual tokens per layer)"
    )
    panels = []
    width = len(trio_label)
    score = {"vanilla": 0, "trio": 0}
    examples = benchmark(args.questions, seed=DEMO_SEED)
    for i, example in enumerate(examples, 1):
        vanilla = predict(model, processor, example)
        pruned = predict(model, processor, example, trio)
        score["vanilla"] += vanilla.correct
        score["trio"] += pruned.correct
        print(f"\nQ{i} [{example.question.kind}] {example.question.text}  (truth: {example.question.answer})")
        for label, result in (("vanilla", vanilla), (trio_label, pruned)):
            print(
                f"  {label:<{width}} : {result.predicted:<8} {_stages(result.stages)}, "
                f"prefill {result.prefill_seconds * 1e3:.0f} ms"
            )
        if args.plot:
            image = example.image
            panels.append((image, f"Q{i}: {example.question.text}", None))
            panels.append((image, f"{trio_label}: {pruned.predicted}", pruned.kept))
            for name, method in others:
                result = predict(model, processor, example, method)
                panels.append((image, f"{name}-{args.budget}: {result.predicted}", result.kept))
    print(
        f"\ncorrect: vanilla {score['vanilla']}/{len(examples)}, {trio_label} {score['trio']}/{len(examples)}"
    )
    if args.plot:
        path = save_overlay(panels, num_visual, args.plot, ignore_beyond=True)  # created tokens: no patch
        print(f"kept-token overlay: {path}")
    return 0
