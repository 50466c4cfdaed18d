"""Load the evaluated model: one device, or spread over several with ``device_map`` (accelerate)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration

from trio_vlm.loading import check_architecture, load_model_and_processor, resolve_dtype

logger = logging.getLogger(__name__)


def model_shape(model_path: str | os.PathLike[str]) -> tuple[int, int]:
    """(decoder layers, visual tokens per image) from the checkpoint's config, without loading weights."""
    config = AutoConfig.from_pretrained(model_path)
    text = getattr(config, "text_config", config)
    num_visual = getattr(config, "image_seq_length", None)
    if num_visual is None:
        raise ValueError(f"{model_path}: the config has no image_seq_length (visual tokens per image)")
    return int(text.num_hidden_layers), int(num_visual)


def model_id(model_path: str | os.PathLike[str]) -> str:
    """LLaVA's ``model_id`` field: the checkpoint folder's or hub id's last component."""
    return Path(os.fspath(model_path).rstrip("/")).name


def load_model(
    model_path: str | os.PathLike[str],
    device: str = "cpu",
    dtype: str = "auto",
    device_map: str | None = None,
) -> tuple[Any, Any]:
    """``(model, processor)`` in eval mode. ``device_map`` (e.g. ``"auto"``) places layers across the visible
    GPUs through accelerate instead of moving the model to ``device``."""
    if device_map is None:
        return load_model_and_processor(model_path, device=device, dtype=dtype)
    check_architecture(model_path)
    try:
        model = LlavaForConditionalGeneration.from_pretrained(
            model_path, dtype=resolve_dtype(dtype), device_map=device_map
        )
    except ImportError as exc:
        raise ImportError(
            f"--device-map {device_map} needs accelerate: pip install accelerate ({exc})"
        ) from exc
    processor = AutoProcessor.from_pretrained(model_path)
    logger.info("loaded %s with device_map=%s", model_path, device_map)
    return model.eval(), processor
