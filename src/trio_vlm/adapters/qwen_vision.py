"""Qwen2.5-VL vision tower: the attention each merged token receives in one block, recomputed from its input.

The tower has no [CLS] token; the Qwen2.5-VL reference of TRIO scores tokens by the attention they receive
(summed over heads, averaged over all queries of the packed sequence, then averaged over each 2×2 merge
unit). This recomputes that signal for one block from the block's input so the tower keeps its fast kernel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.vision_utils import get_vision_window_index

from trio_vlm.adapters.llama_attention import apply_rope

QUERY_CHUNK = 1024


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Vision RoPE on (P, H, d) in float32 with (P, d) tables (Qwen's ``apply_rotary_pos_emb_vision``)."""
    out = apply_rope(x.float().transpose(0, 1)[None], cos.float()[None], sin.float()[None])
    return out[0].transpose(0, 1)


def received_attention(
    block: nn.Module, hidden_in: torch.Tensor, block_kwargs: dict[str, Any]
) -> torch.Tensor:
    """(P,) attention each patch receives in ``block``: mean over heads, summed over the queries of its
    attention segment (``cu_seqlens``) and divided by the P patches of the call, in the block's (window)
    order."""
    attn = block.attn
    x = block.norm1(hidden_in)
    n = x.shape[0]
    q, k, _ = attn.qkv(x).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = block_kwargs["position_embeddings"]
    q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
    bounds = block_kwargs["cu_seqlens"].tolist()
    received = torch.zeros(n, dtype=torch.float32, device=x.device)
    for start, end in zip(bounds[:-1], bounds[1:]):
        keys = k[start:end].transpose(0, 1)  # (H, n_seg, d)
        for lo in range(start, end, QUERY_CHUNK):
            hi = min(end, lo + QUERY_CHUNK)
            scores = (q[lo:hi].transpose(0, 1) @ keys.transpose(1, 2)) * attn.scaling  # (H, chunk, n_seg)
            received[start:end] += scores.softmax(-1).sum(1).mean(0)
    return received / n


def merged_scores(
    received: torch.Tensor, grid_thw: torch.Tensor, merge: int, window_size: int, patch_size: int
) -> list[torch.Tensor]:
    """Patch scores in window order -> one (t·h·w / merge²,) row per image/video of the call, in raster
    order of merged tokens (each the mean of its merge² patches)."""
    unit = merge * merge
    per_unit = received.view(-1, unit).mean(1)
    window_index, _ = get_vision_window_index(grid_thw, merge, window_size, patch_size)
    raster = per_unit[torch.argsort(window_index.to(per_unit.device))]
    sizes = (grid_thw.prod(-1) // unit).tolist()
    return list(raster.split(sizes))
