"""CLIP-tower quantities that encoder-side baselines recompute from a vision layer's *input* (LLaVA family).

The engine hands a method the input hidden states of the vision layers it lists in ``vision_layer_inputs()``;
these helpers turn them into what the official code read off a patched CLIP forward: head-averaged keys, the
patch features LLaVA feeds its projector, and the projection into the LLM's embedding space. They use the
CLIP layer's own modules and LLaVA's projector, so the encoder keeps its fast attention kernel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def feature_input_index(feature_layer: int) -> int:
    """The vision-layer index whose input is ``hidden_states[feature_layer]`` (LLaVA's ``vision_feature_layer``).

    ``hidden_states[k]`` is the output of layer ``k - 1``, i.e. the input of layer ``k``; for negative ``k``
    that is layer ``k + 1`` (LLaVA's -2 → the input of the last layer, index -1). ``-1`` (the tower's final
    output) is no layer's input and is rejected.
    """
    if isinstance(feature_layer, bool) or not isinstance(feature_layer, int):
        raise ValueError(f"feature_layer must be an integer hidden-state index, got {feature_layer!r}")
    if feature_layer == -1:
        raise ValueError(
            "feature_layer -1 (the vision tower's final output) is not the input of any layer; "
            "LLaVA uses -2 (the output of the second-to-last layer)"
        )
    return feature_layer + 1 if feature_layer < 0 else feature_layer


def head_mean_keys(layer: nn.Module, hidden_in: torch.Tensor) -> torch.Tensor:
    """Keys of a CLIP encoder layer averaged over heads, (n_images, 1 + N, head_dim), from the layer's input."""
    attn = layer.self_attn
    keys = attn.k_proj(layer.layer_norm1(hidden_in))
    bsz, seq, _ = keys.shape
    return keys.view(bsz, seq, attn.num_heads, attn.head_dim).mean(2)


def patch_features(hidden_in: torch.Tensor) -> torch.Tensor:
    """Patch rows of a vision hidden state (drops [CLS] at row 0, LLaVA's "default" select strategy)."""
    return hidden_in[..., 1:, :]


def project_to_llm(adapter: Any, features: torch.Tensor) -> torch.Tensor:
    """LLaVA's multimodal projector applied to CLIP patch features (..., D_vision) -> (..., D_llm)."""
    projector = adapter.multimodal_projector
    if projector is None:
        raise ValueError(
            f"{type(adapter.model).__name__} has no LLaVA multi_modal_projector: merged CLIP features cannot "
            "be projected into the language model"
        )
    weight = next(projector.parameters())
    return projector(features.to(weight.dtype))
