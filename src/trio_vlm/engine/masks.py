"""Per-layer attention masks for pruned sequences, in the format each attention backend expects."""

from __future__ import annotations

import torch

SUPPORTED_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")


def allowed_matrix(padding: torch.Tensor, q_len: int, causal: bool = True) -> torch.Tensor:
    """(B, 1, q, kv) bool: query row r (the r-th of the last ``q_len`` tokens) may see key c.

    Causal over the layer's own key sequence (``causal=False``: every key), restricted to real keys. A padding
    query row would see no key at all; it is allowed its own key so no row is fully masked (that yields NaN in
    SDPA, and NaN values in the cache poison later steps even when masked out). Real rows are unaffected.
    """
    kv = padding.shape[1]
    q_pos = torch.arange(kv - q_len, kv, device=padding.device)
    k_pos = torch.arange(kv, device=padding.device)
    visible = k_pos[None, :] <= q_pos[:, None]
    if not causal:
        visible = torch.ones_like(visible)
    allowed = visible[None] & padding[:, None, :]
    own = (k_pos[None, :] == q_pos[:, None])[None] & ~padding[:, -q_len:, None]
    return (allowed | own).unsqueeze(1)


def layer_attention_mask(
    padding: torch.Tensor, q_len: int, implementation: str, dtype: torch.dtype, causal: bool = True
) -> torch.Tensor | None:
    """The ``attention_mask`` a decoder layer receives for a key sequence with validity ``padding`` (B, kv).

    ``causal=False`` lets every query see every real key (sdpa and eager); FlashAttention decoder layers are
    causal whatever mask they get, so there it changes nothing."""
    if implementation == "sdpa":
        # Without padding, SDPA's own causal path (is_causal, as transformers uses) is the fast kernel.
        # (Only when that path is exact: a full causal square, or a single query row.)
        if (q_len == 1 or (causal and q_len == padding.shape[1])) and bool(padding.all()):
            return None
        return allowed_matrix(padding, q_len, causal)
    if implementation == "eager":
        allowed = allowed_matrix(padding, q_len, causal)
        zero = torch.zeros((), dtype=dtype, device=padding.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)
    if implementation in ("flash_attention_2", "flash_attention_3"):
        return None if bool(padding.all()) else padding.to(torch.int32)
    raise ValueError(
        f"unsupported attention implementation {implementation!r} for pruning; use one of {SUPPORTED_ATTENTION}"
    )
