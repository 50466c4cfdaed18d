"""Pick the adapter for a model from its class (the families of :data:`trio_vlm.presets.ARCHITECTURES`)."""

from __future__ import annotations

from torch import nn

from trio_vlm.adapters.base import ModelAdapter
from trio_vlm.adapters.llava import LlavaAdapter
from trio_vlm.adapters.llava_next import LlavaNextAdapter
from trio_vlm.adapters.qwen2_5_vl import Qwen25VLAdapter
from trio_vlm.presets import ARCHITECTURES

ADAPTERS: dict[str, type[ModelAdapter]] = {
    cls.family: cls for cls in (LlavaAdapter, LlavaNextAdapter, Qwen25VLAdapter)
}


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``; ``ValueError`` naming the architecture if it is not supported."""
    name = type(model).__name__
    if name not in ARCHITECTURES:
        raise ValueError(
            f"unsupported model architecture {name!r}; trio-vlm supports: {', '.join(sorted(ARCHITECTURES))}"
        )
    return ADAPTERS[ARCHITECTURES[name]](model)


__all__ = ["ADAPTERS", "LlavaAdapter", "LlavaNextAdapter", "ModelAdapter", "Qwen25VLAdapter", "adapter_for"]
