"""Tiny randomly initialised LLaVA-1.5-architecture models built from real ``transformers`` configs.

Used by the test-suite, the benchmarks and the offline demo: no weights are downloaded.
"""

from __future__ import annotations

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

IMAGE_TOKEN_ID = 3


def tiny_llava_config(
    *,
    grid: int = 12,
    patch_size: int = 2,
    vision_hidden: int = 32,
    vision_layers: int = 8,
    hidden: int = 64,
    layers: int = 6,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    vocab: int = 96,
    attn_implementation: str = "sdpa",
) -> LlavaConfig:
    """A LLaVA-1.5 config in miniature: CLIP tower (``grid``² patches + [CLS]), MLP projector, Llama LM."""
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=vision_hidden * 2,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=grid * patch_size,
        patch_size=patch_size,
        projection_dim=vision_hidden,
    )
    text = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=vocab,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        rms_norm_eps=1e-5,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMAGE_TOKEN_ID,
        image_seq_length=grid * grid,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    config._attn_implementation = attn_implementation
    config.text_config._attn_implementation = attn_implementation
    config.vision_config._attn_implementation = attn_implementation
    return config


def tiny_llava(seed: int = 0, **config_kwargs) -> LlavaForConditionalGeneration:
    """A deterministic tiny random LLaVA model in eval mode (float32, CPU)."""
    config = tiny_llava_config(**config_kwargs)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    # Random init with std 0.02 makes every token look alike; widen weights so scores differ.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2 and "embed" not in name:
                param.normal_(0.0, 1.0 / param.shape[-1] ** 0.5)
            elif "embed" in name:
                param.normal_(0.0, 1.0)
    return model.eval()


def tiny_inputs(
    model: LlavaForConditionalGeneration,
    *,
    batch: int = 1,
    prefix: int = 5,
    suffix: int = 7,
    seed: int = 0,
    n_images: int = 1,
) -> dict[str, torch.Tensor]:
    """Random prompt ``[text × prefix, <image> × N, text × suffix]`` and pixel values for ``model``."""
    cfg = model.config
    n_img = cfg.image_seq_length
    gen = torch.Generator().manual_seed(seed)
    vocab = cfg.text_config.vocab_size
    rows = []
    for _ in range(batch):
        parts = []
        for _ in range(n_images):
            parts.append(torch.randint(4, vocab, (prefix,), generator=gen))
            parts.append(torch.full((n_img,), cfg.image_token_id))
        parts.append(torch.randint(4, vocab, (suffix,), generator=gen))
        rows.append(torch.cat(parts))
    input_ids = torch.stack(rows)
    size = cfg.vision_config.image_size
    pixel_values = torch.randn(batch * n_images, 3, size, size, generator=gen)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": pixel_values,
    }
