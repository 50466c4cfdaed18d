"""Draw a :class:`~trio_vlm.testbed.scene.Scene` as a 336×336 RGB image: textured background, clutter, objects."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from trio_vlm.testbed.glyphs import glyph_mask
from trio_vlm.testbed.scene import COLOURS, IMAGE_SIZE, PATCH, Item, Scene

GLYPH_SCALE = 3
_TILE_RGB = (245, 245, 245)
_INK_RGB = (20, 20, 20)


def _background(rng: np.random.Generator, level: int) -> np.ndarray:
    """Grey with a per-channel tint, a linear gradient and pixel noise (uint8, H×W×3)."""
    axis = np.linspace(-0.5, 0.5, IMAGE_SIZE, dtype=np.float32)
    gy, gx = rng.uniform(-40, 40, size=2)
    base = level + gy * axis[:, None] + gx * axis[None, :]
    tint = rng.uniform(-8, 8, size=3)
    noise = rng.integers(-10, 11, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    img = base[..., None] + tint[None, None, :] + noise
    return np.clip(img, 0, 255).astype(np.uint8)


def _grey(rng: np.random.Generator) -> tuple[int, int, int]:
    g = int(rng.integers(50, 201))
    return tuple(int(np.clip(g + t, 0, 255)) for t in rng.integers(-10, 11, size=3))


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, count: int) -> None:
    """Desaturated line segments and specks, so objects sit among distractors."""
    for _ in range(count):
        x, y = rng.uniform(0, IMAGE_SIZE, size=2)
        length, angle = rng.uniform(10, 80), rng.uniform(0, np.pi)
        end = (x + length * np.cos(angle), y + length * np.sin(angle))
        draw.line([(x, y), end], fill=_grey(rng), width=int(rng.integers(1, 3)))
    for _ in range(count):
        x, y = rng.uniform(0, IMAGE_SIZE, size=2)
        r = rng.uniform(1, 3.5)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_grey(rng))


def _shape_box(rng: np.random.Generator, item: Item) -> tuple[float, float, float, float]:
    """The shape's bounding box inside its block: a random margin of 1-4 px, randomly shifted."""
    x0, y0, span = item.col * PATCH, item.row * PATCH, item.size * PATCH
    margin = int(rng.integers(2, 5))
    side = span - 2 * margin
    dx, dy = (int(v) for v in rng.integers(-margin + 1, margin, size=2))
    left, top = x0 + margin + dx, y0 + margin + dy
    return left, top, left + side - 1, top + side - 1


def _draw_shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, item: Item) -> None:
    base = np.array(COLOURS[item.colour])
    fill = tuple(int(v) for v in np.clip(base + rng.integers(-15, 16, size=3), 0, 255))
    x0, y0, x1, y1 = _shape_box(rng, item)
    cx, cy, w = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
    if item.shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=fill)
    elif item.shape == "square":
        draw.rectangle([x0 + w * 0.08, y0 + w * 0.08, x1 - w * 0.08, y1 - w * 0.08], fill=fill)
    elif item.shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif item.shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif item.shape == "cross":
        t = w / 6
        draw.rectangle([cx - t, y0, cx + t, y1], fill=fill)
        draw.rectangle([x0, cy - t, x1, cy + t], fill=fill)
    else:
        raise ValueError(f"unknown shape {item.shape!r}")


def _draw_tile(pixels: np.ndarray, rng: np.random.Generator, item: Item) -> None:
    x0, y0, span = item.col * PATCH + 1, item.row * PATCH + 1, item.size * PATCH - 2
    pixels[y0 : y0 + span, x0 : x0 + span] = _TILE_RGB
    mask = glyph_mask(item.letter or "", GLYPH_SCALE)
    h, w = mask.shape
    oy = y0 + (span - h) // 2 + int(rng.integers(-1, 2))
    ox = x0 + (span - w) // 2 + int(rng.integers(-2, 3))
    pixels[oy : oy + h, ox : ox + w][mask] = _INK_RGB


def render(scene: Scene) -> Image.Image:
    """The scene's image; deterministic in ``scene`` (all randomness comes from ``scene.render_seed``)."""
    rng = np.random.default_rng(scene.render_seed)
    image = Image.fromarray(_background(rng, scene.background))
    draw = ImageDraw.Draw(image)
    _clutter(draw, rng, scene.clutter)
    for item in scene.shapes:
        _draw_shape(draw, rng, item)
    pixels = np.asarray(image).copy()
    _draw_tile(pixels, rng, scene.tile)
    return Image.fromarray(pixels)
