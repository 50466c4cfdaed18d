"""Decode steps after a pruned prefill: each layer's mask and positions against its own cache length.

Layers before the first drop cache the whole prompt; layers after a drop cache only what survived it. A decode
step's query tokens therefore see, per layer, the prefill keys that layer kept (their validity recorded when the
stage ran) followed by every decoded token; in "compact" mode their positions are shifted down by the number of
tokens the prefill removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trio_vlm.engine.masks import layer_attention_mask


@dataclass
class StageRecord:
    """What decode needs to know about the layers from ``first_layer`` on: their prefill key validity and the
    tokens the prefill removed from each sample before them."""

    first_layer: int
    padding: torch.Tensor
    dropped: torch.Tensor
    all_real: bool = False  # host: the prefill left no padding key in these layers


def decode_layer_kwargs(
    adapter: Any,
    record: StageRecord,
    hidden: torch.Tensor,
    prefill_len: int,
    decoded: int,
    step_attention_mask: torch.Tensor | None,
    step_position_ids: torch.Tensor | None,
    compact: bool,
) -> dict[str, Any]:
    """Mask, position ids and rotary embeddings for a decode step of the layers ``record`` covers.

    ``decoded`` tokens were generated before this step; ``step_attention_mask`` is the 2-D mask the language
    model received (prompt + generated columns), ``step_position_ids`` its position ids (``None``: the model's
    default numbering)."""
    bsz, q_len, _ = hidden.shape
    device = hidden.device
    seen = decoded + q_len
    if step_attention_mask is not None:
        new_mask = step_attention_mask[:, prefill_len:].bool().to(device)
        if new_mask.shape[1] != seen:
            raise ValueError(
                f"attention_mask has {step_attention_mask.shape[1]} columns; expected prefill {prefill_len} + "
                f"{seen} decoded tokens"
            )
    else:
        new_mask = torch.ones(bsz, seen, dtype=torch.bool, device=device)
    padding = torch.cat([record.padding.to(device), new_mask], dim=1)
    positions = adapter.canonical_positions(step_position_ids, bsz, q_len, prefill_len + decoded, device).to(
        device
    )
    if compact:
        positions = positions - record.dropped.to(device)[None, :, None]
    return {
        "attention_mask": layer_attention_mask(
            padding, q_len, adapter.attn_implementation, hidden.dtype, all_real=record.all_real
        ),
        "position_ids": adapter.layer_position_ids(positions),
        "position_embeddings": adapter.rotary(hidden, positions),
    }
