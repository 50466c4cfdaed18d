"""One benchmark question as the runner sees it, independent of the benchmark's file format."""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from trio_vlm.loading import image_problem


@dataclass(frozen=True)
class EvalItem:
    """A question to answer.

    ``text`` follows the image token in the user turn (what the model reads); ``prompt`` is what LLaVA's
    scripts record in the answers file. The image is a file (``image``) or base64 data (``image_b64``,
    MMBench) or absent (text-only ScienceQA questions). ``extra`` holds additional answer-record fields
    (MMBench's ``round_id``, ``options``, ``option_char``); ``info`` holds loader facts the scorer reads.
    """

    question_id: Any
    prompt: str
    text: str
    image: Path | None = None
    image_b64: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """Resume / matching key, as in the answers file: MME and TextVQA reuse ids across prompts."""
        return (str(self.question_id), self.prompt)

    @property
    def has_image(self) -> bool:
        return self.image is not None or self.image_b64 is not None

    def image_problem(self) -> str | None:
        """Why the image cannot be read — missing, not an image, corrupt (``None`` if it can, or if the question
        has none); checked before any answer is generated."""
        if self.image is not None:
            return image_problem(self.image)
        if self.image_b64 is not None:
            if not self.image_b64.strip():
                return "empty base64 image field"
            try:
                with Image.open(io.BytesIO(base64.b64decode(self.image_b64, validate=False))) as img:
                    img.verify()
            except (binascii.Error, UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                return f"cannot decode the base64 image: {exc}"
        return None

    def load_image(self) -> Image.Image | None:
        """The RGB image, or ``None`` for a text-only question; ``FileNotFoundError`` / ``ValueError``
        name the unreadable file or field."""
        if self.image is not None:
            if not self.image.is_file():
                raise FileNotFoundError(f"image file not found: {self.image} ({self.source})")
            try:
                with Image.open(self.image) as img:
                    return img.convert("RGB")
            except (UnidentifiedImageError, OSError) as exc:
                raise ValueError(f"cannot read image {self.image} ({self.source}): {exc}") from exc
        if self.image_b64 is not None:
            try:
                data = base64.b64decode(self.image_b64, validate=False)
                with Image.open(io.BytesIO(data)) as img:
                    return img.convert("RGB")
            except (binascii.Error, UnidentifiedImageError, OSError) as exc:
                raise ValueError(f"cannot decode the base64 image of {self.source}: {exc}") from exc
        return None
