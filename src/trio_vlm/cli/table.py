"""``trio-vlm table``: the paper-style table (and optional plot) from scored ``eval`` runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from trio_vlm.eval.reporting.table import (
    FAMILY_ORDER,
    PAPER_FAMILY,
    build_table,
    collect,
    to_csv,
    to_markdown,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``table`` command."""
    parser = subparsers.add_parser(
        "table", help="methods × benchmarks table from eval runs, families side by side (Markdown / CSV)"
    )
    parser.add_argument("--runs", nargs="+", required=True, help="run folders (searched for scores.json)")
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown", help="printed format")
    parser.add_argument("--csv", help="also write the table as CSV to this file")
    parser.add_argument("--markdown", help="also write the table as Markdown to this file")
    parser.add_argument("--no-paper", dest="paper", action="store_false", help="omit the paper's rows")
    parser.add_argument("--paper-csv", help="a paper table to compare with (default: LLaVA-1.5-7B's)")
    parser.add_argument(
        "--paper-family",
        choices=FAMILY_ORDER,
        default=PAPER_FAMILY,
        help="the family whose rows the paper table accompanies (default: llava-1.5)",
    )
    parser.add_argument("--plot", help="draw accuracy vs. tokens per method to this image file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    results = collect(args.runs)
    paper_csv = Path(args.paper_csv).read_text(encoding="utf-8") if args.paper_csv else None
    rows = build_table(results, with_paper=args.paper, paper_csv=paper_csv, paper_family=args.paper_family)
    markdown, csv_text = to_markdown(rows), to_csv(rows)
    print(markdown if args.format == "markdown" else csv_text, end="")
    if args.csv:
        Path(args.csv).write_text(csv_text, encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(markdown, encoding="utf-8")
    if args.plot:
        from trio_vlm.eval.reporting.plot import plot_accuracy_vs_tokens

        print(f"plot: {plot_accuracy_vs_tokens(results, args.plot)}")
    return 0
