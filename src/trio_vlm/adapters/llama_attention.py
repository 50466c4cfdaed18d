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


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, transpose: bool) -> torch.Tensor:
    """Rotate ``x`` (B, S, H, d) by ``cos``/``sin`` (B, S, d) in Llama's half layout into a new contiguous
    tensor, half by half: ``x1·c1 − x2·s1, x2·c2 + x1·s2`` (the products and sums of ``x·cos +
    rotate_half(x)·sin``), or with ``transpose`` the inverse map's ``x1·c1 + x2·s2, x2·c2 − x1·s1``."""
    half = x.shape[-1] // 2
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    x1, x2, c1, c2, s1, s2 = (
        x[..., :half],
        x[..., half:],
        cos[..., :half],
        cos[..., half:],
        sin[..., :half],
        sin[..., half:],
    )
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    with torch.no_grad():  # called inside an autograd.Function: its backward is the transposed rotation
        if transpose:
            torch.mul(x1, c1, out=out[..., :half]).add_(x2 * s2)
            torch.mul(x2, c2, out=out[..., half:]).sub_(x1 * s1)
        else:
            torch.mul(x1, c1, out=out[..., :half]).sub_(x2 * s1)
            torch.mul(x2, c2, out=out[..., half:]).add_(x1 * s2)
    return out


class _TokenMajorRope(torch.autograd.Function):
    """Rotary embedding of a token-major ``x`` (B, S, H, d): one pass forward and one backward (the transposed
    rotation), instead of the negation, concatenation and broadcast products autograd records for
    :func:`apply_rope` on a head-major view."""

    @staticmethod
    def forward(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return _rotate(x, cos, sin, transpose=False)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: ANN001 - autograd's signature
        ctx.save_for_backward(inputs[1], inputs[2])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN001
        cos, sin = ctx.saved_tensors
        return _rotate(grad.contiguous(), cos, sin, transpose=True), None, None


def rope_token_major(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding for ``x`` (B, S, H, d) with ``cos``/``sin`` (B, S, d); the numbers of :func:`apply_rope`."""
    return _TokenMajorRope.apply(x, cos, sin)


def query_logits(
    layer: nn.Module,
    hidden: torch.Tensor,
    rows: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    padding: torch.Tensor,
    hidden_rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked float32 attention logits (B, H, Q, S) of ``layer`` for query positions ``rows`` (B, Q), and the
    layer's normalised input (B, S, D). ``hidden_rows``: ``hidden`` at ``rows`` when the caller has it."""
    attn = layer.self_attn
    bsz, seq, width = hidden.shape
    head_dim = attn.head_dim
    if hidden_rows is None:
        hidden_rows = hidden.gather(1, rows.unsqueeze(-1).expand(-1, -1, width))
    x = layer.input_layernorm(hidden)
    # the query rows are normalised on their own (a per-token norm), so no gradient is scattered into x
    q = attn.q_proj(layer.input_layernorm(hidden_rows)).view(bsz, rows.shape[1], -1, head_dim)
    k = attn.k_proj(x).view(bsz, seq, -1, head_dim)  # token-major (B, S, H_kv, d): RoPE on contiguous rows
    cos, sin = cos.expand(bsz, -1, -1), sin.expand(bsz, -1, -1)
    rot_gather = rows.unsqueeze(-1).expand(-1, -1, cos.shape[-1])
    q = rope_token_major(q, cos.gather(1, rot_gather), sin.gather(1, rot_gather))
    k = rope_token_major(k, cos, sin)
    kv_heads = k.shape[2]
    groups = q.shape[2] // kv_heads
    # (B, H_kv, groups·Q, d): query heads sharing a key head are stacked, so keys are never repeated
    q = q.permute(0, 2, 1, 3).reshape(bsz, kv_heads, groups * rows.shape[1], head_dim)
    # keys on the left: their gradient comes back (B, H_kv, S, d), whole d-rows away from token-major
    scores = (k.transpose(1, 2) @ q.transpose(-1, -2)).transpose(-1, -2).float() * attn.scaling
    scores = scores.reshape(bsz, kv_heads * groups, rows.shape[1], seq)
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
    hidden_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Output of ``layer`` at positions ``rows`` (B, Q) only, without a cache. Returns (B, Q, D).
    ``hidden_rows``: ``hidden`` at ``rows``, passed separately when the caller differentiates the two apart
    (the probe adds their gradients itself instead of scattering a (B, S, D) one).

    Keys are projected for all S tokens (that is how gradients reach visual tokens); queries, the attention
    output, the residual and the MLP only for the Q rows. Values are never projected token by token:
    ``Σ_j p_j · W_v x_j = W_v (Σ_j p_j x_j)``, so each head averages the normalised inputs first and projects
    Q·H vectors — the same numbers up to rounding, and a backward pass through a (Q·H × S) product instead
    of an S × D × D one. Causal + padding masking as in the full layer.
    """
    attn = layer.self_attn
    if hidden_rows is None:
        hidden_rows = hidden.gather(1, rows.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    scores, x = query_logits(layer, hidden, rows, cos, sin, padding, hidden_rows)
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
    h = hidden_rows + attn.o_proj(out)
    return h + layer.mlp(layer.post_attention_layernorm(h))


def rotary_keys(layer: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(B, S, H_kv·d) post-RoPE keys of ``layer`` (input norm → k_proj → RoPE), heads concatenated.

    Key-value heads are not repeated for grouped-query attention (repetition scales every L1 norm by the same
    factor, so rankings are unchanged).
    """
    attn = layer.self_attn
    bsz, seq, _ = hidden.shape
    k = attn.k_proj(layer.input_layernorm(hidden)).view(bsz, seq, -1, attn.head_dim)
    return rope_token_major(k, cos.expand(bsz, -1, -1), sin.expand(bsz, -1, -1)).reshape(bsz, seq, -1)
