"""Public entry point: ``with trio_vlm.apply(model, method) as run: model.generate(...)``."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from torch import nn

from trio_vlm.adapters import adapter_for
from trio_vlm.contract import PruneEvent
from trio_vlm.engine.hooks import CallRecord, PruneSession
from trio_vlm.methods.base import TokenMethod


@dataclass
class PruneRun:
    """What happened inside an :func:`apply` block: every drop (``events``), every prefill call (``calls``:
    its wall time and the visual tokens each sample started with), and the model's decoder depth."""

    method: TokenMethod
    num_layers: int
    events: list[PruneEvent] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)

    @property
    def prefill_seconds(self) -> list[float]:
        """Device-synchronised wall time of each prefill (vision encoder included), for every method alike."""
        return [c.prefill_seconds for c in self.calls]

    def _call_index(self, call: int) -> int:
        if not self.calls:
            raise ValueError("no prefill ran inside the apply() block")
        return self.calls[call].index

    def tokens_per_stage(self, call: int = -1, sample: int = 0) -> dict[str | int, int]:
        """``{stage key: visual tokens kept}`` for one sample of one prefill call (default: the last)."""
        if not self.calls:
            return {}
        target = self._call_index(call)
        return {e.stage.key: e.tokens_after[sample] for e in self.events if e.call == target}

    def tokens_per_layer(self, call: int = -1, sample: int = 0) -> list[int]:
        """Visual tokens entering each decoder layer, measured: the sample's visual tokens at the start of the
        prefill, then what every drop of that call left."""
        target = self._call_index(call)
        current = self.calls[target].visual_tokens[sample]
        drops = {e.layer_index: e.tokens_after[sample] for e in self.events if e.call == target}
        out = []
        for layer in range(self.num_layers):
            current = drops.get(layer, current)
            out.append(current)
        return out

    def average_tokens(self, call: int = -1, sample: int = 0) -> float:
        """Measured average visual tokens per decoder layer (the paper's budget) of one sample of one call."""
        per_layer = self.tokens_per_layer(call, sample)
        return sum(per_layer) / len(per_layer)


#: Models inside an apply() block, with the method pruning them (one method per model at a time).
_ACTIVE: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


@contextmanager
def apply(model: nn.Module, method: TokenMethod) -> Iterator[PruneRun]:
    """Prune ``model``'s visual tokens with ``method`` for every forward / ``generate`` call in the block.

    The model is only hooked, never modified: leaving the block removes every hook and restores it exactly.
    One method at a time: a nested ``apply`` on the same model is refused (chain an encoder-stage method and
    LLM stages with :class:`~trio_vlm.methods.compose.Compose` instead). Works under ``torch.no_grad()`` and
    ``torch.inference_mode()`` alike (TRIO's probe enables autograd for one layer on its own).
    """
    if not isinstance(method, TokenMethod):
        raise TypeError(
            f"method must be a trio_vlm method (e.g. trio_vlm.TRIO(...)), got {type(method).__name__}"
        )
    if model in _ACTIVE:
        raise RuntimeError(
            f"this model is already pruned by {_ACTIVE[model]!r} in an enclosing trio_vlm.apply() block; "
            "leave that block first (to chain an encoder-stage method with LLM stages use trio_vlm.Compose)"
        )
    adapter = adapter_for(model)
    session = PruneSession(model, adapter, method)
    run = PruneRun(method=method, num_layers=adapter.num_layers, events=session.events, calls=session.calls)
    session.install()
    _ACTIVE[model] = method.name
    try:
        yield run
    finally:
        session.remove()
        _ACTIVE.pop(model, None)
