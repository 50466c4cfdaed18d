"""Plain reference computations for LLaVA-NeXT and Qwen2.5-VL (no trio_vlm engine code)."""

from __future__ import annotations

import torch
from helpers import float_causal_mask


def lm_call_inputs(model, inputs) -> dict:
    """What the language model receives in a vanilla prefill: inputs_embeds, position_ids, attention_mask."""
    seen: dict = {}

    def grab(module, args, kwargs):
        if not seen:
            seen.update(kwargs)

    handle = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    return seen


def prunable_positions(model, inputs, embeds: torch.Tensor, b: int = 0) -> torch.Tensor:
    """Prompt positions of sample ``b``'s prunable visual tokens: image/video placeholders, minus LLaVA-NeXT's
    row newlines (recognised by their embedding)."""
    ids = inputs["input_ids"][b]
    cfg = model.config
    visual = ids == cfg.image_token_id
    if getattr(cfg, "video_token_id", None) is not None:
        visual |= ids == cfg.video_token_id
    newline = getattr(model.model, "image_newline", None)
    if newline is not None:
        visual &= ~(embeds[b] == newline).all(-1)
    return visual.nonzero().flatten()


def keep_positions(seq: int, prunable: torch.Tensor, kept_visual: torch.Tensor) -> torch.Tensor:
    """Sequence positions left when only the prunable tokens with original index in ``kept_visual`` stay."""
    keep = torch.ones(seq, dtype=torch.bool)
    keep[prunable] = False
    keep[prunable[kept_visual]] = True
    return keep.nonzero().flatten()


def run_layers(model, hidden: torch.Tensor, layers, positions: torch.Tensor) -> torch.Tensor:
    """Decoder layers on one unpadded sample; ``positions`` (1, S) or Qwen's (3, 1, S)."""
    lm = model.model.language_model
    pe = lm.rotary_emb(hidden, positions)
    mask = float_causal_mask(torch.ones(1, hidden.shape[1], dtype=torch.bool), hidden.dtype)
    for i in layers:
        out = lm.layers[i](hidden, attention_mask=mask, position_embeddings=pe, position_ids=None)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def logits_of(model, hidden: torch.Tensor) -> torch.Tensor:
    return model.lm_head(model.model.language_model.norm(hidden))


def qwen_received_attention(
    block, hidden_in: torch.Tensor, cu_seqlens: torch.Tensor, cos, sin
) -> torch.Tensor:
    """The Qwen2.5-VL reference's vision score for one block: full softmax(QKᵀ) with a block-diagonal mask,
    summed over heads, averaged over all queries."""
    attn = block.attn
    x = block.norm1(hidden_in)
    n = x.shape[0]
    qkv = attn.qkv(x).reshape(n, 3, attn.num_heads, -1)
    q, k = qkv[:, 0].float(), qkv[:, 1].float()

    def rope(t):
        half = t.shape[-1] // 2
        rotated = torch.cat([-t[..., half:], t[..., :half]], -1)
        return t * cos[:, None].float() + rotated * sin[:, None].float()

    q, k = rope(q), rope(k)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for lo, hi in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()):
        allowed[lo:hi, lo:hi] = True
    total = torch.zeros(n, n)
    for h in range(attn.num_heads):
        scores = (q[:, h] @ k[:, h].T) / q.shape[-1] ** 0.5
        total += scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    return total.mean(0)
