"""Public entry point: ``with trio_vlm.apply(model, method) as run: model.generate(...)``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from torch import nn

from trio_vlm.adapters import adapter_for
from trio_vlm.engine.session import PruneSession
from trio_vlm.events import PruneEvent
from trio_vlm.methods.base import TokenMethod


@dataclass
class PruneRun:
    """What happened inside an :func:`apply` block: every drop (``events``) and each prefill's wall time."""

    method: TokenMethod
    events: list[PruneEvent] = field(default_factory=list)
    prefill_seconds: list[float] = field(default_factory=list)

    def tokens_per_stage(self, call: int = -1, sample: int = 0) -> dict[str | int, int]:
        """``{stage: visual tokens kept}`` for one sample of one prefill call (default: the last)."""
        if not self.events:
            return {}
        calls = sorted({e.call for e in self.events})
        target = calls[call]
        return {e.stage: e.tokens_after[sample] for e in self.events if e.call == target}


@contextmanager
def apply(model: nn.Module, method: TokenMethod) -> Iterator[PruneRun]:
    """Prune ``model``'s visual tokens with ``method`` for every forward / ``generate`` call in the block.

    The model is only hooked, never modified: leaving the block removes every hook and restores it exactly.
    """
    if not isinstance(method, TokenMethod):
        raise TypeError(
            f"method must be a trio_vlm method (e.g. trio_vlm.TRIO(...)), got {type(method).__name__}"
        )
    session = PruneSession(model, adapter_for(model), method)
    run = PruneRun(method=method, events=session.events, prefill_seconds=session.prefill_seconds)
    session.install()
    try:
        yield run
    finally:
        session.remove()
