"""Pick the adapter for a model from its class."""

from __future__ import annotations

from torch import nn

from trio_vlm.adapters.base import ModelAdapter
from trio_vlm.adapters.llava import LlavaAdapter
from trio_vlm.adapters.llava_next import LlavaNextAdapter
from trio_vlm.adapters.qwen2_5_vl import Qwen25VLAdapter

SUPPORTED = {
    "LlavaForConditionalGeneration": LlavaAdapter,
    "LlavaNextForConditionalGeneration": LlavaNextAdapter,
    "Qwen2_5_VLForConditionalGeneration": Qwen25VLAdapter,
}


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``; ``ValueError`` naming the architecture if it is not supported."""
    name = type(model).__name__
    if name not in SUPPORTED:
        raise ValueError(
            f"unsupported model architecture {name!r}; trio-vlm supports: {', '.join(sorted(SUPPORTED))}"
        )
    return SUPPORTED[name](model)


__all__ = ["ModelAdapter", "LlavaAdapter", "LlavaNextAdapter", "Qwen25VLAdapter", "adapter_for", "SUPPORTED"]
