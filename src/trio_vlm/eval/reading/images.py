"""Image preparation as LLaVA-1.5's evaluation does it: pad to a square with the processor's mean colour."""

from __future__ import annotations

from typing import Any

from PIL import Image


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """``image`` centred on a square canvas of its longer side filled with ``fill`` (unchanged if square)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def mean_colour(processor: Any) -> tuple[int, int, int]:
    """The image processor's normalisation mean as 0–255 RGB (LLaVA's padding colour)."""
    image_processor = getattr(processor, "image_processor", processor)
    mean = getattr(image_processor, "image_mean", None)
    if mean is None or len(mean) != 3:
        raise ValueError(f"{type(image_processor).__name__} has no 3-channel image_mean to pad with")
    return tuple(int(channel * 255) for channel in mean)  # type: ignore[return-value]
