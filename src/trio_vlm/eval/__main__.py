"""``python -m trio_vlm.eval …`` (the same options as ``trio-vlm eval``), e.g. under
``torchrun --nproc-per-node N -m trio_vlm.eval --bench pope --data … --device cuda``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from trio_vlm.cli.eval_cmd import add_arguments, run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trio_vlm.eval", description="Answer and score a benchmark."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0)
    add_arguments(parser)
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
