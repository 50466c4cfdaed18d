"""Pick the adapter for a model from its class."""

from __future__ import annotations

from torch import nn

from trio_vlm.adapters.base import ModelAdapter
from trio_vlm.adapters.llava import LlavaAdapter

SUPPORTED = {"LlavaForConditionalGeneration": LlavaAdapter}


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``; ``ValueError`` naming the architecture if it is not supported."""
    name = type(model).__name__
    if name not in SUPPORTED:
        raise ValueError(
            f"unsupported model architecture {name!r}; trio-vlm supports: {', '.join(sorted(SUPPORTED))}"
        )
    return SUPPORTED[name](model)


__all__ = ["ModelAdapter", "LlavaAdapter", "adapter_for", "SUPPORTED"]
