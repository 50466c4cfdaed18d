"""A LLaVA-1.5-geometry model scaled down to run on a CPU: 336 px / patch 14 → 24×24 = 576 visual tokens,
vocabulary 32000, Llama width 1024, a realistic LLaVA prompt around the image."""

from __future__ import annotations

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

IMAGE_TOKEN_ID = 32000


def bench_llava(
    layers: int = 32,
    hidden: int = 1024,
    intermediate: int | None = None,
    vision_hidden: int = 128,
    vision_layers: int = 8,
    attn: str = "sdpa",
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LlavaForConditionalGeneration:
    """Random weights (timing does not depend on them); ``hidden=4096, intermediate=11008, vision_hidden=1024,
    vision_layers=24`` is LLaVA-1.5-7B's exact geometry."""
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=vision_hidden * 4,
        num_hidden_layers=vision_layers,
        num_attention_heads=max(vision_hidden // 64, 1),
        image_size=336,
        patch_size=14,
        projection_dim=128,
    )
    text = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate or int(hidden * 2.6875),
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        vocab_size=32064,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN_ID, image_seq_length=576
    )
    for c in (config, config.text_config, config.vision_config):
        c._attn_implementation = attn
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # build in place: a 7B-geometry model never passes through host memory
            model = LlavaForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():  # spread the weights so saliency and similarities are not degenerate
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, (1.0 if "embed" in name else 1.0 / p.shape[-1] ** 0.5))
    return model


def bench_inputs(model: LlavaForConditionalGeneration, before: int = 35, after: int = 30, seed: int = 0):
    """``[BOS + system + 'USER:' ≈ before tokens, 576 image tokens, question + 'ASSISTANT:' ≈ after tokens]``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat(
        [
            torch.tensor([1]),
            torch.randint(3, 32000, (before - 1,), generator=g),
            torch.full((576,), IMAGE_TOKEN_ID),
            torch.randint(3, 32000, (after,), generator=g),
        ]
    )[None]
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(1, 3, 336, 336, generator=g),
    }
