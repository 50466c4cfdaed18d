"""Analytic FLOPs of a (pruned) prefill, in the paper's convention and exactly.

* ``fastv`` — FastV's per-layer formula used by the paper: ``4·n·d² + 2·n²·d + 2·n·d·m`` (n tokens in the
  layer, d hidden, m FFN width), summed over layers. It counts one multiply-add as one FLOP and models a
  2-matrix MLP with full multi-head attention.
* ``exact`` — multiply-adds of what a Llama layer really computes for n tokens (GQA projections, both attention
  matmuls over the full n×n matrix, gated 3-matrix MLP), times 2 FLOPs per multiply-add: the convention of
  ``torch.utils.flop_counter.FlopCounterMode`` (tests cross-check it with eager attention).

TRIO's probe is reported separately: forward + backward ≈ 3× the forward multiply-adds of the paths it uses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LMShape:
    """The sizes of a Llama-style language model that FLOPs depend on."""

    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    layers: int

    @classmethod
    def from_config(cls, text_config) -> LMShape:
        heads = text_config.num_attention_heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
        return cls(
            hidden=text_config.hidden_size,
            intermediate=text_config.intermediate_size,
            heads=heads,
            kv_heads=getattr(text_config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            vocab=text_config.vocab_size,
            layers=text_config.num_hidden_layers,
        )


def fastv_layer_flops(n: int, s: LMShape) -> float:
    d, m = s.hidden, s.intermediate
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m


def exact_layer_macs(n: int, s: LMShape, kv_len: int | None = None) -> float:
    """Multiply-adds of one decoder layer for ``n`` query tokens attending to ``kv_len`` keys (default n)."""
    kv = n if kv_len is None else kv_len
    dq, dkv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    proj = n * s.hidden * (2 * dq + 2 * dkv)
    attn = 2 * n * kv * dq
    mlp = 3 * n * s.hidden * s.intermediate
    return proj + attn + mlp


def prefill_flops(tokens_per_layer: list[int], s: LMShape, convention: str = "fastv") -> float:
    """FLOPs of the decoder layers for one prefill with ``tokens_per_layer[l]`` tokens in layer l."""
    if len(tokens_per_layer) != s.layers:
        raise ValueError(f"need one token count per layer ({s.layers}), got {len(tokens_per_layer)}")
    if convention == "fastv":
        return float(sum(fastv_layer_flops(n, s) for n in tokens_per_layer))
    if convention == "exact":
        return float(sum(2 * exact_layer_macs(n, s) for n in tokens_per_layer))
    raise ValueError(f"unknown FLOPs convention {convention!r}; use 'fastv' or 'exact'")


def probe_flops(n: int, s: LMShape, k_positions: int = 4, kind: str = "fast") -> float:
    """FLOPs (2 per multiply-add) of one TRIO probe at a stage with ``n`` tokens, forward + backward (≈3×).

    ``reference``: the next layer for all n tokens plus the LM head on all n positions.
    ``fast``: K/V projections for n tokens, the rest of the layer and the LM head for K rows.
    """
    if kind == "reference":
        fwd = exact_layer_macs(n, s) + n * s.hidden * s.vocab
    elif kind == "fast":
        dq, dkv = s.heads * s.head_dim, s.kv_heads * s.head_dim
        k = k_positions
        fwd = (
            n * s.hidden * 2 * dkv
            + k * s.hidden * 2 * dq
            + 2 * k * n * dq
            + 3 * k * s.hidden * s.intermediate
            + k * s.hidden * s.vocab
        )
    else:
        raise ValueError(f"unknown probe kind {kind!r}")
    return 3.0 * 2.0 * fwd
