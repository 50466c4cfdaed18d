"""The ``trio-vlm`` command line: one module per subcommand, named after it."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

from transformers.utils import logging as hf_logging

from trio_vlm.cli import answer, answer_file, compare, demo, eval, profile, table, testbed_eval
from trio_vlm.locks import FileLocked

COMMANDS = (demo, answer, answer_file, compare, eval, table, profile, testbed_eval)
#: What a user's input can get wrong (options, files, data): one line, exit status 2. Anything else is a bug
#: and keeps its traceback.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    FileLocked,
)
USER_ERROR_STATUS = 2


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
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        if args.verbose:
            traceback.print_exc()
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"trio-vlm {args.command}: error: {message}", file=sys.stderr)
        if not args.verbose:
            print("(run with -v for the traceback)", file=sys.stderr)
        return USER_ERROR_STATUS
    except KeyboardInterrupt:
        print(f"trio-vlm {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
