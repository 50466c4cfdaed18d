"""LLaVA-1.5 and LLaVA-NeXT geometry with random weights (timings do not depend on the weights): 336 px tiles of
patch 14 → 24×24 = 576 visual tokens per tile, vocabulary 32000, a realistic LLaVA prompt around the image.
``hidden=4096, intermediate=11008, vision_hidden=1024, vision_layers=24`` is the 7B models' exact geometry."""

from __future__ import annotations

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
)
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

IMAGE_TOKEN_ID = 32000
TILE_PX = 336
NEXT_IMAGE_SIZE = (672, 672)  # a 2×2 grid of crops + the base tile: 5 × 576 tokens + 48 row newlines
NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def _configs(layers: int, hidden: int, intermediate: int | None, vision_hidden: int, vision_layers: int):
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=vision_hidden * 4,
        num_hidden_layers=vision_layers,
        num_attention_heads=max(vision_hidden // 64, 1),
        image_size=TILE_PX,
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
        max_position_embeddings=8192,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return vision, text


def _build(model_class, config, attn: str, seed: int, device: str, dtype: torch.dtype):
    for c in (config, config.text_config, config.vision_config):
        c._attn_implementation = attn
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # build in place: a 7B-geometry model never passes through host memory
            model = model_class(config).eval()
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():  # spread the weights so saliency and similarities are not degenerate
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, (1.0 if "embed" in name else 1.0 / p.shape[-1] ** 0.5))
    return model


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
    """LLaVA-1.5 geometry."""
    vision, text = _configs(layers, hidden, intermediate, vision_hidden, vision_layers)
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN_ID, image_seq_length=576
    )
    return _build(LlavaForConditionalGeneration, config, attn, seed, device, dtype)


def bench_llava_next(
    layers: int = 32,
    hidden: int = 1024,
    intermediate: int | None = None,
    vision_hidden: int = 128,
    vision_layers: int = 8,
    attn: str = "sdpa",
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LlavaNextForConditionalGeneration:
    """LLaVA-NeXT geometry: any-resolution grids of 336 px crops, row newlines."""
    vision, text = _configs(layers, hidden, intermediate, vision_hidden, vision_layers)
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMAGE_TOKEN_ID,
        image_grid_pinpoints=NEXT_PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=576,
    )
    return _build(LlavaNextForConditionalGeneration, config, attn, seed, device, dtype)


def _prompt(image_tokens: int, before: int, after: int, g: torch.Generator) -> torch.Tensor:
    return torch.cat(
        [
            torch.tensor([1]),
            torch.randint(3, 32000, (before - 1,), generator=g),
            torch.full((image_tokens,), IMAGE_TOKEN_ID),
            torch.randint(3, 32000, (after,), generator=g),
        ]
    )[None]


def bench_inputs(model, before: int = 35, after: int = 30, seed: int = 0) -> dict[str, torch.Tensor]:
    """``[BOS + system + 'USER:' ≈ before tokens, the image's tokens, question + 'ASSISTANT:' ≈ after tokens]``
    for either geometry (LLaVA-NeXT: one 672×672 image, its token count read off the model itself)."""
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    if isinstance(model, LlavaNextForConditionalGeneration):
        tiles = image_size_to_num_patches(NEXT_IMAGE_SIZE, model.config.image_grid_pinpoints, TILE_PX)
        pixel_values = torch.randn(1, tiles, 3, TILE_PX, TILE_PX, generator=g).to(device, model.dtype)
        sizes = torch.tensor([NEXT_IMAGE_SIZE], device=device)
        with torch.no_grad():
            packed = model.model.get_image_features(pixel_values, sizes, return_dict=True).pooler_output[0]
        ids = _prompt(packed.shape[0], before, after, g)
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "pixel_values": pixel_values,
            "image_sizes": sizes,
        }
    ids = _prompt(576, before, after, g)
    pixels = torch.randn(1, 3, TILE_PX, TILE_PX, generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}
