"""A checkpoint's processor, also where torchvision is missing.

transformers' ``Qwen2_5_VLProcessor`` carries a video processor, and video processors need torchvision; without
it ``AutoProcessor`` cannot build the processor at all, although images alone need no torchvision (the image
processor has a PIL backend). :class:`Qwen2_5_VLImageProcessor` is the stock processor without its video part:
the same tokenizer, image processor, chat template and placeholder expansion, refusing videos.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

from transformers import AutoProcessor, Qwen2_5_VLProcessor

logger = logging.getLogger(__name__)


class Qwen2_5_VLImageProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` for images and text only (no ``video_processor``, so no torchvision)."""

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs
    ):
        # The parent passes (image_processor, tokenizer, video_processor); the mixin keeps as many as this
        # class's own __init__ names, so the video slot is dropped.
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    def __call__(self, images: Any = None, text: Any = None, videos: Any = None, **kwargs: Any) -> Any:
        if videos is not None:
            raise ValueError("video input needs the full Qwen2.5-VL processor: pip install torchvision")
        return super().__call__(images=images, text=text, **kwargs)


def has_torchvision() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def load_processor(source: str | os.PathLike[str], family: str, trust_remote_code: bool = False) -> Any:
    """The checkpoint's processor (``AutoProcessor``); a Qwen2.5-VL checkpoint where torchvision is not
    installed gets :class:`Qwen2_5_VLImageProcessor` (images and text only)."""
    if family == "qwen2.5-vl" and not has_torchvision():
        logger.info("torchvision is not installed: loading the Qwen2.5-VL processor without its video part")
        return Qwen2_5_VLImageProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    return AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
