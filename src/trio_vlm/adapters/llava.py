"""LLaVA-1.5 (``LlavaForConditionalGeneration``: CLIP tower + MLP projector + Llama) adapter."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trio_vlm.adapters.base import ModelAdapter
from trio_vlm.contract import VisualItem


def square_item(seq_index: torch.Tensor, vision_row: int, side: int | None = None) -> VisualItem:
    """A whole image of ``seq_index.numel()`` tokens in raster order on one vision row (LLaVA-1.5)."""
    n = seq_index.numel()
    patch = torch.arange(n, device=seq_index.device)
    side = side if side is not None else int(round(n**0.5))
    square = side * side == n
    return VisualItem(
        seq_index=seq_index,
        vision_row=torch.full((n,), vision_row, dtype=torch.long, device=seq_index.device),
        patch=patch,
        tile=torch.zeros(n, dtype=torch.long, device=seq_index.device),
        row=torch.div(patch, side, rounding_mode="floor") if square else None,
        col=patch % side if square else None,
    )


class LlavaAdapter(ModelAdapter):
    """Stock HF LLaVA-1.5. Reference position convention: contiguous renumbering after a drop."""

    family = "llava-1.5"
    default_position_mode = "compact"

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.model.vision_tower

    @property
    def vision_layers(self) -> nn.ModuleList:
        tower = self.vision_tower
        # transformers 5.x flattens CLIPVisionModel; 4.x nests it under .vision_model
        inner = getattr(tower, "vision_model", tower)
        return inner.encoder.layers

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    @property
    def tokens_per_image(self) -> int:
        return int(self.model.config.image_seq_length)

    def visual_layout(
        self, kinds: torch.Tensor, embeds: torch.Tensor, positions: torch.Tensor
    ) -> list[list[VisualItem]]:
        """Every sample's images as runs of ``tokens_per_image`` image tokens, vision rows in prompt order: one
        ``nonzero`` over the whole batch and one read of the per-sample counts (no per-image host sync)."""
        n = self.tokens_per_image
        mask = kinds > 0
        flat = mask.nonzero()  # (tokens, 2): sample, position — in sample-major order
        counts = mask.sum(1).tolist()
        bad = [c for c in counts if c % n]
        if bad:
            raise ValueError(
                f"found {bad[0]} image tokens in a sample, not a multiple of the {n} tokens per image"
            )
        out: list[list[VisualItem]] = []
        row = 0
        for sample_positions in flat[:, 1].split(counts):
            items = []
            for image_positions in sample_positions.split(n):
                items.append(square_item(image_positions, row))
                row += 1
            out.append(items)
        return out

    def cls_attention_from_input(
        self, layer: nn.Module, hidden_in: torch.Tensor, layer_kwargs: dict[str, Any] | None = None
    ) -> torch.Tensor:
        attn = layer.self_attn
        x = layer.layer_norm1(hidden_in)
        bsz, seq, _ = x.shape
        q = attn.q_proj(x[:, :1]).view(bsz, 1, attn.num_heads, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(bsz, seq, attn.num_heads, attn.head_dim).transpose(1, 2)
        probs = ((q @ k.transpose(-1, -2)).float() * attn.scale).softmax(-1)  # (B, H, 1, S)
        return probs[:, :, 0, 1:].mean(1)
