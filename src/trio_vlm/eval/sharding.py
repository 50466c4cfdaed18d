"""Split questions across processes (torchrun / accelerate) and merge their answers in question order.

Each rank answers questions ``i % world == rank`` into ``answers.rank{K}.jsonl``. Rank 0 then waits until
the answer files hold every expected question (a file-based barrier: no process group is needed, and a
rank that finished in an earlier, interrupted run counts as finished) and merges them into
``answers.jsonl``. Rank files are kept, so a merge can always be redone and nothing is ever lost.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

from trio_vlm.eval.reading.answers import answer_key, read_answers

logger = logging.getLogger(__name__)

T = TypeVar("T")
MERGED = "answers.jsonl"
Key = tuple[str, str]


def world_from_env(env: dict[str, str] | None = None) -> tuple[int, int]:
    """``(world_size, rank)`` from ``WORLD_SIZE`` / ``RANK`` (set by torchrun and accelerate), default (1, 0)."""
    env = dict(os.environ) if env is None else env
    try:
        world, rank = int(env.get("WORLD_SIZE", "1")), int(env.get("RANK", "0"))
    except ValueError:
        raise ValueError(
            f"WORLD_SIZE and RANK must be integers, got {env.get('WORLD_SIZE')!r}, {env.get('RANK')!r}"
        ) from None
    check_rank(world, rank)
    return world, rank


def check_rank(world: int, rank: int) -> None:
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world size, got rank {rank} of {world}")


def shard(items: Sequence[T], world: int, rank: int) -> list[T]:
    """Every ``world``-th item starting at ``rank`` (round robin keeps the shards balanced)."""
    check_rank(world, rank)
    return [item for i, item in enumerate(items) if i % world == rank]


def rank_answers(out_dir: Path, world: int, rank: int) -> Path:
    """Where this rank appends: ``answers.jsonl`` itself when running alone."""
    return out_dir / (MERGED if world == 1 else f"answers.rank{rank}.jsonl")


def answer_files(out_dir: Path) -> list[Path]:
    """The merged file first, then every rank file (also those of earlier runs with another world size)."""
    ranks = sorted(out_dir.glob("answers.rank*.jsonl"), key=lambda p: p.name)
    return [out_dir / MERGED, *ranks]


def collected_records(out_dir: Path) -> dict[Key, dict[str, Any]]:
    """Every answer in the output folder by key (read-only; a rank's unfinished last line is ignored)."""
    records: dict[Key, dict[str, Any]] = {}
    for path in answer_files(out_dir):
        for record in read_answers(path):
            records.setdefault(answer_key(record), record)
    return records


def wait_until_complete(
    out_dir: Path, expected: Collection[Key], timeout: float, poll: float = 5.0
) -> dict[Key, dict[str, Any]]:
    """Block until the answer files hold every key in ``expected``; return all records then.
    ``TimeoutError`` says how many are still missing."""
    deadline = time.monotonic() + timeout
    while True:
        records = collected_records(out_dir)
        missing = [key for key in expected if key not in records]
        if not missing:
            return records
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{len(missing)} of {len(expected)} answers still missing in {out_dir} after {timeout:.0f} s "
                "(did a rank fail?); rerun the same command to resume - finished answers are kept"
            )
        logger.info("waiting for the other ranks: %d answers to go", len(missing))
        time.sleep(poll)


def merge(out_dir: Path, records: dict[Key, dict[str, Any]], order: Sequence[Key]) -> Path:
    """Write ``records`` to ``answers.jsonl`` in question ``order`` (others after, in file order),
    atomically (temporary file, fsync, rename)."""
    position = {key: i for i, key in enumerate(order)}
    ordered = sorted(records.values(), key=lambda r: position.get(answer_key(r), len(position)))
    merged = out_dir / MERGED
    tmp = out_dir / (MERGED + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for record in ordered:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, merged)
    return merged
