"""The testbed model's architecture: a stock LLaVA-1.5 config (CLIP-336/14 geometry) at tiny widths."""

from __future__ import annotations

from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

from trio_vlm.testbed.scene import GRID, PATCH
from trio_vlm.testbed.vocab import IMAGE_TOKEN_ID, vocabulary

VISION_WIDTH = 96
VISION_LAYERS = 8  # layer 5 (TRIO's shallow map) is a real middle layer; -2 = 6 feeds the projector
LLM_WIDTH = 128
LLM_LAYERS = 16  # deep enough that a 64-token average over the layers is reachable without an encoder stage


def model_config(
    *,
    vision_width: int = VISION_WIDTH,
    vision_layers: int = VISION_LAYERS,
    llm_width: int = LLM_WIDTH,
    llm_layers: int = LLM_LAYERS,
    attn_implementation: str = "sdpa",
) -> LlavaConfig:
    """``LlavaConfig`` with 336 px / patch 14 (576 patches + [CLS]), feature layer -2, "default" strategy."""
    vocab_size = -(-len(vocabulary()) // 8) * 8
    vision = CLIPVisionConfig(
        hidden_size=vision_width,
        intermediate_size=vision_width * 4,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=GRID * PATCH,
        patch_size=PATCH,
        projection_dim=vision_width,
    )
    text = LlamaConfig(
        hidden_size=llm_width,
        intermediate_size=llm_width * 2,
        num_hidden_layers=llm_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMAGE_TOKEN_ID,
        image_seq_length=GRID * GRID,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    for cfg in (config, config.text_config, config.vision_config):
        cfg._attn_implementation = attn_implementation
    return config
