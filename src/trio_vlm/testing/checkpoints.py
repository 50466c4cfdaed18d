"""Saved tiny checkpoints of every family — model, processor and chat template — for the entry points' tests.

Each folder is what ``save_pretrained`` writes for a real checkpoint (``config.json``, safetensors weights,
tokenizer, image processor, ``processor_config.json``, chat template), so the CLI, ``eval`` and the lmms-eval
plugin load it through :func:`trio_vlm.loading.load_model_and_processor` as they load a hub checkpoint. The
models are the random ones of :mod:`trio_vlm.testing.tiny` and :mod:`trio_vlm.testing.tiny_families`; the
tokenizers are word-level over :data:`trio_vlm.bundled.WORDS`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from transformers import (
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    PreTrainedTokenizerFast,
    Qwen2VLImageProcessorPil,
)

from trio_vlm.bundled import WORDS, build_tiny_tokenizer, save_tiny_checkpoint, word_level_tokenizer
from trio_vlm.processors import Qwen2_5_VLImageProcessor, has_torchvision
from trio_vlm.testing.tiny_families import next_pinpoints, tiny_llava_next, tiny_qwen25_vl

logger = logging.getLogger(__name__)

FAMILIES = ("llava-1.5", "llava-next", "qwen2.5-vl")

#: LLaVA-1.5 / LLaVA-NeXT (Vicuna) chat template in the llava-hf checkpoints' format:
#: ``USER: <image>\n{text} ASSISTANT:`` (images first, then the text).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] + ' ' }}{% endfor %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
#: Qwen2.5-VL's ChatML format: a default system turn, ``<|vision_start|><|image_pad|><|vision_end|>`` per image.
QWEN_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_QWEN_NAMED = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
}
# ids 0-6 as tiny_families: pad, bos, eos, image pad, video pad, vision start, vision end; then chat markers
_QWEN_SPECIALS = ("<pad>", "<s>", "</s>", *_QWEN_NAMED.values(), "<|im_start|>", "<|im_end|>", "<unk>")
#: Qwen2.5-VL pixels per image: 16×16 to 48×48 (2 px patches merged 2×2: 16 to 144 tokens per image).
QWEN_MIN_PIXELS, QWEN_MAX_PIXELS = 16 * 16, 48 * 48
#: Vision towers as deep as the tiny LLaVA-1.5's, so every method's default vision layers exist (TRIO's
#: encoder stage reads layer 5 of CLIP, block 7 of Qwen2.5-VL's tower).
VISION_LAYERS = 8
#: LLaVA-NeXT tiles of 24 px (12×12 patches), so TRIO's 6×6 encoder windows tile them as on the 24×24 original.
NEXT_CHECKPOINT_TILE_PX = 24


def qwen_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer with Qwen2.5-VL's vision and chat special tokens (ids fit ``tiny_qwen25_vl``)."""
    vocab = {token: i for i, token in enumerate((*_QWEN_SPECIALS, *WORDS))}
    return word_level_tokenizer(
        vocab,
        padding_side="left",
        named_tokens=_QWEN_NAMED,
        control_tokens=_QWEN_SPECIALS,
        add_bos=False,
    )


def save_qwen_checkpoint(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Save ``tiny_qwen25_vl(seed)`` (8 vision blocks) with a Qwen2.5-VL processor (PIL image processor, ChatML template).

    Where torchvision is installed the stock ``Qwen2_5_VLProcessor`` (video part included) writes it; elsewhere
    the image-only processor does, and the file names the stock class with a video processor section, as a
    real checkpoint's does."""
    path = Path(path)
    model = tiny_qwen25_vl(seed, vision_depth=VISION_LAYERS)
    vision = model.config.vision_config
    sizes = {
        "patch_size": vision.patch_size,
        "merge_size": vision.spatial_merge_size,
        "temporal_patch_size": vision.temporal_patch_size,
        "size": {"shortest_edge": QWEN_MIN_PIXELS, "longest_edge": QWEN_MAX_PIXELS},
    }
    image_processor = Qwen2VLImageProcessorPil(**sizes)
    model.save_pretrained(path)
    if has_torchvision():  # the stock processor, video part included
        from transformers import Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

        video_processor = Qwen2VLVideoProcessor(**sizes)
        processor = Qwen2_5_VLProcessor(
            image_processor, qwen_tokenizer(), video_processor, chat_template=QWEN_CHAT_TEMPLATE
        )
        processor.save_pretrained(path)
        return path
    processor = Qwen2_5_VLImageProcessor(image_processor, qwen_tokenizer(), chat_template=QWEN_CHAT_TEMPLATE)
    processor.save_pretrained(path)
    config_path = path / "processor_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["processor_class"] = "Qwen2_5_VLProcessor"
    config["video_processor"] = {
        **sizes,
        "video_processor_type": "Qwen2VLVideoProcessor",
        "image_mean": image_processor.image_mean,
        "image_std": image_processor.image_std,
    }
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    logger.info("saved tiny Qwen2.5-VL checkpoint (seed %d) to %s", seed, path)
    return path


def save_next_checkpoint(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Save ``tiny_llava_next(seed)`` (8 vision layers) with a stock ``LlavaNextProcessor`` (24 px tiles, the any-resolution grids
    of :data:`~trio_vlm.testing.tiny_families.NEXT_PINPOINTS`, Vicuna chat template)."""
    path = Path(path)
    model = tiny_llava_next(seed, vision_layers=VISION_LAYERS, tile_px=NEXT_CHECKPOINT_TILE_PX)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": NEXT_CHECKPOINT_TILE_PX},
        crop_size={"height": NEXT_CHECKPOINT_TILE_PX, "width": NEXT_CHECKPOINT_TILE_PX},
        image_grid_pinpoints=next_pinpoints(NEXT_CHECKPOINT_TILE_PX),
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=build_tiny_tokenizer(),
        patch_size=model.config.vision_config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    logger.info("saved tiny LLaVA-NeXT checkpoint (seed %d) to %s", seed, path)
    return path


def save_family_checkpoint(family: str, path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Save a tiny random checkpoint of ``family`` (one of :data:`FAMILIES`) with its processor and a chat
    template to ``path``; return the path."""
    if family == "llava-1.5":
        return save_tiny_checkpoint(path, seed, chat_template=LLAVA_CHAT_TEMPLATE)
    if family == "llava-next":
        return save_next_checkpoint(path, seed)
    if family == "qwen2.5-vl":
        return save_qwen_checkpoint(path, seed)
    raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
