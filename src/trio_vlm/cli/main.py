"""The ``trio-vlm`` command line: one module per subcommand, named after it."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from transformers.utils import logging as hf_logging

from trio_vlm.cli import answer, answer_file, compare, demo, eval, profile, table, testbed_eval

COMMANDS = (demo, answer, answer_file, compare, eval, table, profile, testbed_eval)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="trio-vlm",
        description="Visual token pruning (TRIO and baselines) for LLaVA-1.5, LLaVA-NeXT and Qwen2.5-VL.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: info logs, -vv: debug logs")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    for sub in subparsers.choices.values():  # also accept -v after the command; SUPPRESS keeps the count
        sub.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the chosen command and return its exit status."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose == 0:
        hf_logging.disable_progress_bar()  # weight-loading bars; our own tqdm bars stay
    return args.func(args)
