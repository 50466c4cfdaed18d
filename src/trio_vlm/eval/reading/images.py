"""Image preparation as each family's evaluation does it: LLaVA-1.5 pads to a square with the processor's mean
colour (LLaVA's ``image_aspect_ratio="pad"``); LLaVA-NeXT (``"anyres"``) and Qwen2.5-VL (dynamic resolution)
take the image as it is."""

from __future__ import annotations

from typing import Any

from PIL import Image

#: Whether each family's reference evaluation pads images to a square (``pad_square="auto"``).
FAMILY_PAD_SQUARE = {"llava-1.5": True, "llava-next": False, "qwen2.5-vl": False}


def resolve_pad_square(pad_square: bool | None, family: str) -> bool:
    """``None`` (auto) becomes the family's reference choice; a bool is kept."""
    return FAMILY_PAD_SQUARE[family] if pad_square is None else bool(pad_square)


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


def square_fill(processor: Any, pad_square: bool) -> tuple[int, int, int] | None:
    """The padding colour when images are padded to a square, else ``None``."""
    return mean_colour(processor) if pad_square else None


def prepare_image(image: Image.Image, fill: tuple[int, int, int] | None) -> Image.Image:
    """``image`` padded to a square with ``fill`` (``None``: as it is)."""
    return image if fill is None else expand_to_square(image, fill)
