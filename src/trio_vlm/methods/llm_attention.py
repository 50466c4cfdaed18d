"""What LLM-side baselines read from one decoder layer: a few head-averaged attention rows, or its keys.

Both are recomputed from the layer's *input* hidden states, so the model keeps its SDPA/FlashAttention kernel
and no full attention matrix is ever materialised. ``score_dtype`` (:data:`SCORE_DTYPES`) says in which dtype
scores are ranked: ``"model"`` rounds them to the model's dtype first, as the official code does (its attention
probabilities are fp16/bf16 tensors, so near-equal scores tie and ties break by index here), ``"float32"``
ranks the float32 values.
"""

from __future__ import annotations

from typing import Any

import torch

#: Ranking dtypes: the model's (official) or float32.
SCORE_DTYPES = ("model", "float32")


def score_dtype_of(score_dtype: str, hidden: torch.Tensor) -> torch.dtype:
    """The dtype scores are ranked in: ``hidden``'s for ``"model"``, else float32."""
    return hidden.dtype if score_dtype == "model" else torch.float32


def head_mean_attention(
    adapter: Any,
    index: int,
    hidden: torch.Tensor,
    layer_kwargs: dict[str, Any],
    rows: torch.Tensor,
    padding: torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(B, Q, S) attention probabilities of decoder layer ``index`` for query positions ``rows`` (B, Q),
    averaged over heads; ``hidden`` is the layer's input and ``layer_kwargs`` its rotary embeddings. The
    probabilities are computed in float32 and rounded to ``dtype`` before the head mean (the official
    eager attention's ``softmax(..., dtype=float32).to(model dtype)`` then ``mean(dim=1)``)."""
    cos, sin = layer_kwargs["position_embeddings"]
    return adapter.attention_probs(index, hidden, rows, cos, sin, padding).to(dtype).mean(1)


def rotary_keys(adapter: Any, index: int, hidden: torch.Tensor, layer_kwargs: dict[str, Any]) -> torch.Tensor:
    """(B, S, H_kv·d) post-RoPE keys of decoder layer ``index`` (input norm → k_proj → RoPE), from its input."""
    return adapter.rotary_keys(index, hidden, layer_kwargs)


def text_after_image(
    groups_positions: list[torch.Tensor], positions: torch.Tensor, padding_row: torch.Tensor
) -> torch.Tensor:
    """Real, non-visual positions of one sample that come after the image whose positions are ``positions``.

    ``groups_positions`` are the visual positions of every image of the sample (other images are excluded)."""
    visual = torch.zeros_like(padding_row)
    for pos in groups_positions:
        visual[pos] = True
    after = torch.arange(padding_row.numel(), device=padding_row.device) > positions.max()
    return (after & padding_row & ~visual).nonzero().flatten()
