"""``trio-vlm testbed-eval``: accuracy of every method × budget on the synthetic testbed (the paper's table in
miniature), with an accuracy-vs-budget plot."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_BUDGETS = "192,128,64"
DEFAULT_QUESTIONS = 120


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``testbed-eval`` command."""
    parser = subparsers.add_parser("testbed-eval", help="method x budget accuracy on the synthetic testbed")
    parser.add_argument("--model", help="testbed checkpoint directory (default: the bundled one)")
    parser.add_argument("--methods", default="all", help="'all' or comma-separated registered method names")
    parser.add_argument("--budgets", default=DEFAULT_BUDGETS, help="comma-separated average tokens per layer")
    parser.add_argument("--questions", type=int, default=DEFAULT_QUESTIONS, help="held-out questions")
    parser.add_argument("--seed", type=int, help="question stream (default: the held-out evaluation stream)")
    parser.add_argument("--plot", default="testbed_accuracy.png", help="accuracy-vs-budget PNG ('' for none)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.set_defaults(func=run)


def parse_budgets(text: str) -> list[int]:
    """``"192,128,64"`` → ``[192, 128, 64]``; ``ValueError`` naming the bad entry."""
    budgets = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"--budgets must be comma-separated positive integers, got {text!r} ({part!r})")
        budgets.append(int(part))
    return budgets


def parse_methods(text: str) -> list[str] | None:
    """``"all"`` → ``None`` (every registered method); else validated registry names."""
    from trio_vlm.methods.registry import method_class

    if text.strip().lower() == "all":
        return None
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--methods must be 'all' or comma-separated method names, got {text!r}")
    for name in names:
        method_class(name)  # ValueError naming the unknown method and the available ones
    return list(dict.fromkeys(names))


def run(args: argparse.Namespace) -> int:
    """Evaluate vanilla and every method at every budget; print the table; save the plot."""
    from trio_vlm.loading import load_model_and_processor
    from trio_vlm.testbed import bundled_model_dir
    from trio_vlm.testbed.generator import EVAL_SEED, benchmark
    from trio_vlm.testbed.grid import run_grid
    from trio_vlm.testbed.schedules import variants
    from trio_vlm.testbed.table import markdown_table, plot_accuracy

    budgets = parse_budgets(args.budgets)
    chosen = variants(parse_methods(args.methods))
    if args.questions < 1:
        raise ValueError(f"--questions must be >= 1, got {args.questions}")
    model_dir = Path(args.model) if args.model else bundled_model_dir()
    seed = EVAL_SEED if args.seed is None else args.seed
    model, processor = load_model_and_processor(model_dir)
    examples = benchmark(args.questions, seed=seed)
    print(f"model: {model_dir}")
    print(f"questions: {len(examples)} held-out (seed {seed}); budgets: {budgets} average tokens per layer")
    vanilla, rows = run_grid(model, processor, examples, chosen, budgets)
    print(markdown_table(vanilla, rows))
    if args.plot:
        print(f"plot: {plot_accuracy(vanilla, rows, args.plot)}")
    if args.json:
        payload = [vars(vanilla), *(vars(r) for r in rows)]
        Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")
        print(f"json: {args.json}")
    return 0
