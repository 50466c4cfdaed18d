"""LLaVA-1.5's evaluation image handling: pad to a square with the processor's mean colour."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from trio_vlm.bundled import build_tiny_processor
from trio_vlm.eval.reading.images import expand_to_square, mean_colour
from trio_vlm.eval.reading.items import EvalItem


def test_wide_image_is_centred_vertically() -> None:
    image = Image.new("RGB", (40, 28), (255, 0, 0))
    out = np.asarray(expand_to_square(image, (1, 2, 3)))
    assert out.shape == (40, 40, 3)
    assert (out[:6] == (1, 2, 3)).all() and (out[34:] == (1, 2, 3)).all()  # (40 - 28) // 2 = 6 rows above
    assert (out[6:34] == (255, 0, 0)).all()


def test_tall_image_is_centred_horizontally() -> None:
    image = Image.new("RGB", (5, 8), (0, 255, 0))
    out = np.asarray(expand_to_square(image, (9, 9, 9)))
    assert out.shape == (8, 8, 3)
    assert (out[:, :1] == 9).all() and (out[:, 1:6] == (0, 255, 0)).all() and (out[:, 6:] == 9).all()


def test_square_image_is_returned_as_is() -> None:
    image = Image.new("RGB", (7, 7))
    assert expand_to_square(image, (0, 0, 0)) is image


def test_mean_colour_is_the_processor_mean_times_255() -> None:
    assert mean_colour(build_tiny_processor()) == (122, 116, 104)  # CLIP's mean, truncated like LLaVA
    with pytest.raises(ValueError, match="no 3-channel image_mean"):
        mean_colour(SimpleNamespace(image_processor=SimpleNamespace()))


def test_item_images_from_file_and_base64(tmp_path: Path) -> None:
    Image.new("L", (3, 2), 200).save(tmp_path / "a.png")
    assert EvalItem(1, "p", "t", image=tmp_path / "a.png").load_image().mode == "RGB"
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (5, 6, 7)).save(buffer, format="PNG")
    item = EvalItem(2, "p", "t", image_b64=base64.b64encode(buffer.getvalue()).decode())
    assert item.load_image().getpixel((0, 0)) == (5, 6, 7)
    assert EvalItem(3, "p", "t").load_image() is None
    missing = EvalItem(4, "p", "t", image=tmp_path / "nope.png", source="q.jsonl:4")
    assert missing.image_problem() == f"image file not found: {tmp_path / 'nope.png'}"
    with pytest.raises(FileNotFoundError, match=r"nope.png \(q.jsonl:4\)"):
        missing.load_image()
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        EvalItem(5, "p", "t", image=tmp_path / "bad.png").load_image()
    with pytest.raises(ValueError, match="cannot decode the base64 image"):
        EvalItem(6, "p", "t", image_b64="aGVsbG8=").load_image()
    assert EvalItem(7, "p", "t", image_b64=" ").image_problem() == "empty base64 image field"
