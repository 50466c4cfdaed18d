"""Tiny random LLaVA-NeXT and Qwen2.5-VL models from real ``transformers`` configs, and prompts for them.

Like :mod:`trio_vlm.testing.tiny`: nothing is downloaded, everything is deterministic and runs on a CPU in
milliseconds. Token ids 0-2 are pad/bos/eos; LLaVA-NeXT uses 3 as ``<image>``; Qwen2.5-VL uses 3/4 as image/
video pad and 5/6 as vision start/end; text tokens are drawn from 7 upwards.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)

IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, VISION_START_ID, VISION_END_ID = 3, 4, 5, 6
FIRST_TEXT_ID = 7
VOCAB = 96
#: LLaVA-NeXT tiles of 16 px with 2 px patches (8×8 = 64 tokens per tile) and the stock pinpoint shapes.
NEXT_TILE_PX = 16
NEXT_PINPOINTS = [[16, 32], [32, 16], [32, 32], [48, 16], [16, 48]]


def _set_attention(config, attn_implementation: str) -> None:
    for cfg in (config, config.text_config, config.vision_config):
        cfg._attn_implementation = attn_implementation


def _widen(model: nn.Module, seed: int) -> nn.Module:
    """Random init with std 0.02 makes every token look alike; widen weights so scores differ."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embed_tokens" in name:
                param.normal_(0.0, 1.0)
            elif param.dim() >= 2:
                param.normal_(0.0, 1.0 / param[0].numel() ** 0.5)
    return model.eval()


def _text_config(**overrides) -> dict:
    base = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "max_position_embeddings": 4096,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "rms_norm_eps": 1e-5,
    }
    base.update(overrides)
    return base


# ---- Qwen2.5-VL ----------------------------------------------------------------------------------------
def tiny_qwen25_vl(
    seed: int = 0, attn_implementation: str = "sdpa", vision_depth: int = 4
) -> Qwen2_5_VLForConditionalGeneration:
    """A tiny Qwen2.5-VL: 4 vision blocks (full attention in blocks 1 and 3, else 2×2-token windows; with
    ``vision_depth`` 8: blocks 3 and 7), 2 px patches merged 2×2, and a 6-layer M-RoPE decoder with
    grouped-query attention."""
    if vision_depth not in (4, 8):
        raise ValueError(f"vision_depth must be 4 or 8, got {vision_depth}")
    vision = {
        "depth": vision_depth,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 4,
        "patch_size": 2,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 8,
        "out_hidden_size": 64,
        "fullatt_block_indexes": [1, 3] if vision_depth == 4 else [3, 7],
        "tokens_per_second": 2,
    }
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    config = Qwen2_5_VLConfig(
        vision_config=vision,
        text_config=_text_config(rope_parameters=rope),
        image_token_id=IMAGE_TOKEN_ID,
        video_token_id=VIDEO_TOKEN_ID,
        vision_start_token_id=VISION_START_ID,
        vision_end_token_id=VISION_END_ID,
    )
    _set_attention(config, attn_implementation)
    torch.manual_seed(seed)
    return _widen(Qwen2_5_VLForConditionalGeneration(config), seed)


def _patch_dim(model: Qwen2_5_VLForConditionalGeneration) -> int:
    v = model.config.vision_config
    return v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size


def qwen_inputs(
    model: Qwen2_5_VLForConditionalGeneration,
    *,
    images: list[list[tuple[int, int]]],
    videos: list[list[tuple[int, int, int]]] | None = None,
    prefix: int = 5,
    suffix: int = 7,
    seed: int = 0,
    left_pad: bool = True,
) -> dict[str, torch.Tensor]:
    """A batch of prompts ``[text, <vs> image <ve>, …, <vs> video <ve>, …, text]``.

    ``images[b]`` lists sample ``b``'s images as (height, width) in patches, ``videos[b]`` its videos as
    (frames, height, width) with frames a multiple of the temporal patch size. Rows of different length are
    left-padded (as for generation) unless ``left_pad`` is False.
    """
    v = model.config.vision_config
    merge2 = v.spatial_merge_size**2
    gen = torch.Generator().manual_seed(seed)
    videos = videos or [[] for _ in images]
    rows, kinds, image_grids, video_grids = [], [], [], []

    def text(n: int) -> torch.Tensor:
        return torch.randint(FIRST_TEXT_ID, VOCAB, (n,), generator=gen)

    for sample_images, sample_videos in zip(images, videos):
        parts = [text(prefix)]
        for h, w in sample_images:
            image_grids.append((1, h, w))
            parts += [torch.tensor([VISION_START_ID]), torch.full((h * w // merge2,), IMAGE_TOKEN_ID)]
            parts += [torch.tensor([VISION_END_ID]), text(2)]
        for f, h, w in sample_videos:
            t = f // v.temporal_patch_size
            video_grids.append((t, h, w))
            parts += [torch.tensor([VISION_START_ID]), torch.full((t * h * w // merge2,), VIDEO_TOKEN_ID)]
            parts += [torch.tensor([VISION_END_ID]), text(2)]
        parts.append(text(suffix))
        row = torch.cat(parts)
        rows.append(row)
        kinds.append((row == IMAGE_TOKEN_ID).int() + 2 * (row == VIDEO_TOKEN_ID).int())
    width = max(r.numel() for r in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    mm_types = torch.zeros(len(rows), width, dtype=torch.int)
    for b, (row, kind) in enumerate(zip(rows, kinds)):
        span = slice(width - row.numel(), width) if left_pad else slice(0, row.numel())
        input_ids[b, span], attention[b, span], mm_types[b, span] = row, 1, kind
    out = {"input_ids": input_ids, "attention_mask": attention, "mm_token_type_ids": mm_types}
    if image_grids:
        grid = torch.tensor(image_grids)
        out["image_grid_thw"] = grid
        out["pixel_values"] = torch.randn(int(grid.prod(-1).sum()), _patch_dim(model), generator=gen)
    if video_grids:
        grid = torch.tensor(video_grids)
        out["video_grid_thw"] = grid
        out["pixel_values_videos"] = torch.randn(int(grid.prod(-1).sum()), _patch_dim(model), generator=gen)
        out["second_per_grid_ts"] = torch.ones(len(video_grids))
    return out


# ---- LLaVA-NeXT ------------------------------------------------------------------------------------------
def next_pinpoints(tile_px: int = NEXT_TILE_PX) -> list[list[int]]:
    """:data:`NEXT_PINPOINTS` for tiles of ``tile_px`` pixels (the same grids of tiles)."""
    return [[h * tile_px // NEXT_TILE_PX, w * tile_px // NEXT_TILE_PX] for h, w in NEXT_PINPOINTS]


def tiny_llava_next(
    seed: int = 0, attn_implementation: str = "sdpa", vision_layers: int = 4, tile_px: int = NEXT_TILE_PX
) -> LlavaNextForConditionalGeneration:
    """A tiny LLaVA-NeXT: CLIP tower on 16 px tiles (8×8 patches + [CLS], ``vision_layers`` layers),
    any-resolution grids from :data:`NEXT_PINPOINTS`, row newlines, and a 6-layer Llama decoder.
    ``tile_px`` (a multiple of 16) scales the tiles and the grids alike (24: 12×12 patches per tile)."""
    if tile_px % 8 or tile_px < 16:
        raise ValueError(f"tile_px must be a multiple of 8 and at least 16, got {tile_px}")
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=tile_px,
        patch_size=2,
        projection_dim=32,
    )
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=LlamaConfig(**_text_config()),
        image_token_index=IMAGE_TOKEN_ID,
        image_grid_pinpoints=next_pinpoints(tile_px),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=(tile_px // 2) ** 2,
    )
    _set_attention(config, attn_implementation)
    torch.manual_seed(seed)
    return _widen(LlavaNextForConditionalGeneration(config), seed)


def next_token_counts(
    model: LlavaNextForConditionalGeneration, image_size: tuple[int, int]
) -> tuple[int, int]:
    """(patch tokens, row newlines) the model makes of an image of ``image_size`` (height, width) in pixels."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    tiles = image_size_to_num_patches(image_size, model.config.image_grid_pinpoints, NEXT_TILE_PX)
    pixels = torch.zeros(1, tiles, 3, NEXT_TILE_PX, NEXT_TILE_PX)
    with torch.no_grad():
        feats = model.model.get_image_features(pixels, torch.tensor([image_size]), return_dict=True)
    packed = feats.pooler_output[0]
    newlines = int((packed == model.model.image_newline).all(-1).sum())
    return int(packed.shape[0]) - newlines, newlines


def next_image_tokens(model: LlavaNextForConditionalGeneration, image_size: tuple[int, int]) -> int:
    """Visual tokens (base tile + unpadded crops + row newlines) the model makes of an image of ``image_size``."""
    return sum(next_token_counts(model, image_size))


def next_inputs(
    model: LlavaNextForConditionalGeneration,
    *,
    image_sizes: list[list[tuple[int, int]]],
    prefix: int = 5,
    suffix: int = 7,
    seed: int = 0,
    left_pad: bool = True,
) -> dict[str, torch.Tensor]:
    """A batch of prompts ``[text, <image>…, text, …]`` for images of the given (height, width) in pixels."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    gen = torch.Generator().manual_seed(seed)
    rows, sizes = [], []
    for sample in image_sizes:
        parts = [torch.randint(FIRST_TEXT_ID, VOCAB, (prefix,), generator=gen)]
        for size in sample:
            sizes.append(size)
            parts.append(torch.full((next_image_tokens(model, size),), IMAGE_TOKEN_ID))
            parts.append(torch.randint(FIRST_TEXT_ID, VOCAB, (2,), generator=gen))
        parts.append(torch.randint(FIRST_TEXT_ID, VOCAB, (suffix,), generator=gen))
        rows.append(torch.cat(parts))
    width = max(r.numel() for r in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        span = slice(width - row.numel(), width) if left_pad else slice(0, row.numel())
        input_ids[b, span], attention[b, span] = row, 1
    tiles = [image_size_to_num_patches(s, model.config.image_grid_pinpoints, NEXT_TILE_PX) for s in sizes]
    pixel_values = torch.zeros(len(sizes), max(tiles), 3, NEXT_TILE_PX, NEXT_TILE_PX)
    for i, n in enumerate(tiles):
        pixel_values[i, :n] = torch.randn(n, 3, NEXT_TILE_PX, NEXT_TILE_PX, generator=gen)
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "pixel_values": pixel_values,
        "image_sizes": torch.tensor(sizes),
    }


def tiny_family_models(seed: int = 0) -> dict[str, nn.Module]:
    """One tiny random model per family, keyed by family name (LLaVA-1.5, LLaVA-NeXT, Qwen2.5-VL)."""
    from trio_vlm.testing.tiny import tiny_llava

    return {
        "llava-1.5": tiny_llava(seed=seed),
        "llava-next": tiny_llava_next(seed=seed),
        "qwen2.5-vl": tiny_qwen25_vl(seed=seed),
    }
