"""A Llama-style decoder layer (Llama, Qwen2 and relatives) recomputed for a few query rows.

Methods never ask the model for attention matrices: the rows they need (FastV's last token, PDrop's last
instruction token, SparseVLM's raters, TRIO's probe rows) and the keys DART ranks are recomputed here from the
layer's *input* hidden states with the layer's own modules (``input_layernorm``, ``self_attn.{q,k,v,o}_proj``,
``mlp``), so the model keeps its SDPA/FlashAttention kernel. The module layout is transformers' (5.x).
"""

from __future__ import annotations

import torch
from torch import nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding for ``x`` (B, H, S, d) with ``cos``/``sin`` (B, S, d) (Llama's half-rotation layout)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


def query_logits(
    layer: nn.Module,
    hidden: torch.Tensor,
    rows: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    padding: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked float32 attention logits (B, H, Q, S) of ``layer`` for query positions ``rows`` (B, Q), and the
    layer's normalised input (B, S, D)."""
    attn = layer.self_attn
    bsz, seq, _ = hidden.shape
    head_dim = attn.head_dim
    x = layer.input_layernorm(hidden)
    x_rows = x.gather(1, rows.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    q = attn.q_proj(x_rows).view(bsz, rows.shape[1], -1, head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(bsz, seq, -1, head_dim).transpose(1, 2)
    cos, sin = cos.expand(bsz, -1, -1), sin.expand(bsz, -1, -1)
    rot_gather = rows.unsqueeze(-1).expand(-1, -1, cos.shape[-1])
    q = apply_rope(q, cos.gather(1, rot_gather), sin.gather(1, rot_gather))
    k = apply_rope(k, cos, sin)
    groups = q.shape[1] // k.shape[1]
    # (B, H_kv, groups·Q, d): query heads sharing a key head are stacked, so keys are never repeated
    q = q.reshape(bsz, k.shape[1], groups * rows.shape[1], head_dim)
    scores = (q @ k.transpose(-1, -2)).float() * attn.scaling
    scores = scores.view(bsz, k.shape[1] * groups, rows.shape[1], seq)
    allowed = (torch.arange(seq, device=hidden.device)[None, None, :] <= rows[:, :, None]) & padding[
        :, None, :
    ]
    return scores.masked_fill(~allowed[:, None], torch.finfo(scores.dtype).min), x


def layer_rows(
    layer: nn.Module,
    hidden: torch.Tensor,
    rows: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    padding: torch.Tensor,
) -> torch.Tensor:
    """Output of ``layer`` at positions ``rows`` (B, Q) only, without a cache. Returns (B, Q, D).

    Keys are projected for all S tokens (that is how gradients reach visual tokens); queries, the attention
    output, the residual and the MLP only for the Q rows. Values are never projected token by token:
    ``Σ_j p_j · W_v x_j = W_v (Σ_j p_j x_j)``, so each head averages the normalised inputs first and projects
    Q·H vectors — the same numbers up to rounding, and a backward pass through a (Q·H × S) product instead
    of an S × D × D one. Causal + padding masking as in the full layer.
    """
    attn = layer.self_attn
    scores, x = query_logits(layer, hidden, rows, cos, sin, padding)
    probs = scores.softmax(-1).to(x.dtype)  # (B, H, Q, S)
    bsz, heads, n_rows, _ = probs.shape
    mixed = probs.reshape(bsz, heads * n_rows, -1) @ x  # (B, H·Q, D): one product, no broadcast copy
    mixed = mixed.view(bsz, heads, n_rows, -1).permute(1, 0, 2, 3).reshape(heads, bsz * n_rows, -1)
    w_v = attn.v_proj.weight.view(-1, attn.head_dim, x.shape[-1])  # (H_kv, d, D)
    groups = heads // w_v.shape[0]
    if groups > 1:  # grouped-query attention: each key-value head serves `groups` query heads
        w_v = w_v.repeat_interleave(groups, dim=0)
    out = mixed @ w_v.transpose(1, 2)  # (H, B·Q, d)
    out = out.view(heads, bsz, n_rows, -1).permute(1, 2, 0, 3)  # (B, Q, H, d)
    if attn.v_proj.bias is not None:  # attention weights sum to one, so the bias passes through
        out = out + attn.v_proj.bias.view(-1, attn.head_dim).repeat_interleave(groups, dim=0)
    out = out.reshape(bsz, n_rows, -1)
    h = hidden.gather(1, rows.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])) + attn.o_proj(out)
    return h + layer.mlp(layer.post_attention_layernorm(h))


def rotary_keys(layer: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(B, S, H_kv·d) post-RoPE keys of ``layer`` (input norm → k_proj → RoPE), heads concatenated.

    Key-value heads are not repeated for grouped-query attention (repetition scales every L1 norm by the same
    factor, so rankings are unchanged).
    """
    attn = layer.self_attn
    bsz, seq, _ = hidden.shape
    k = attn.k_proj(layer.input_layernorm(hidden)).view(bsz, seq, -1, attn.head_dim).transpose(1, 2)
    k = apply_rope(k, cos.expand(bsz, -1, -1), sin.expand(bsz, -1, -1))
    return k.transpose(1, 2).reshape(bsz, seq, -1)
