"""Questions about a scene, with the ground-truth answer read from the scene description (never the pixels)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trio_vlm.testbed.scene import COLOURS, GRID, SHAPES, Item, Scene

KINDS: tuple[str, ...] = ("exist", "shape", "colour", "count", "position", "glyph")
PLURALS = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "cross": "crosses",
    "diamond": "diamonds",
}
MAX_COUNT = 8


@dataclass(frozen=True)
class Question:
    """A question of kind ``kind`` whose single-word ``answer`` depends on the patches in ``evidence``."""

    kind: str
    text: str
    answer: str
    evidence: tuple[int, ...] = ()


def _pick(rng: np.random.Generator, items: list) -> object:
    return items[int(rng.integers(len(items)))]


def _evidence(*items: Item) -> tuple[int, ...]:
    return tuple(sorted({p for it in items for p in it.patches()}))


def exist_question(scene: Scene, rng: np.random.Generator) -> Question:
    """POPE-like yes/no; negatives are hard (the colour or the shape is present, not both together)."""
    shapes = scene.shapes
    present = {(it.colour, it.shape) for it in shapes}
    if rng.random() < 0.5:
        item = _pick(rng, shapes)
        colour, shape, answer = item.colour, item.shape, "yes"
    else:
        near = sorted(
            {(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present}
            & (
                {(it.colour, s) for it in shapes for s in SHAPES}
                | {(c, it.shape) for it in shapes for c in COLOURS}
            )
        )
        colour, shape = _pick(rng, near)
        answer = "no"
    related = [it for it in shapes if it.colour == colour or it.shape == shape]
    return Question("exist", f"is there a {colour} {shape} in the image ?", answer, _evidence(*related))


def shape_question(scene: Scene, rng: np.random.Generator) -> Question:
    item = _pick(rng, scene.shapes)
    return Question("shape", f"what shape is the {item.colour} object ?", item.shape, _evidence(item))


def colour_question(scene: Scene, rng: np.random.Generator) -> Question:
    shapes = [it.shape for it in scene.shapes]
    unique = [it for it in scene.shapes if shapes.count(it.shape) == 1]
    if not unique:
        raise ValueError("scene has no shape that occurs exactly once; cannot ask for a colour")
    item = _pick(rng, unique)
    return Question("colour", f"what colour is the {item.shape} ?", item.colour, _evidence(item))


def count_question(scene: Scene, rng: np.random.Generator) -> Question:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    matches = [it for it in scene.shapes if it.shape == shape]
    if len(matches) > MAX_COUNT:
        raise ValueError(f"count {len(matches)} exceeds MAX_COUNT={MAX_COUNT}")
    return Question("count", f"how many {PLURALS[shape]} are there ?", str(len(matches)), _evidence(*matches))


def _side(item: Item, horizontal: bool) -> str | None:
    start = item.col if horizontal else item.row
    if start + item.size <= GRID // 2:
        return "left" if horizontal else "top"
    if start >= GRID // 2:
        return "right" if horizontal else "bottom"
    return None  # straddles the middle line


def position_question(scene: Scene, rng: np.random.Generator) -> Question:
    """Left/right or top/bottom half of an object that lies entirely in one half."""
    horizontal = bool(rng.random() < 0.5)
    options = [(it, side) for it in scene.shapes if (side := _side(it, horizontal)) is not None]
    if not options:
        horizontal = not horizontal
        options = [(it, side) for it in scene.shapes if (side := _side(it, horizontal)) is not None]
    if not options:
        raise ValueError("every object straddles the image's middle lines; cannot ask for a side")
    item, side = _pick(rng, options)
    pair = "on the left or the right" if horizontal else "at the top or the bottom"
    return Question("position", f"is the {item.colour} object {pair} ?", side, _evidence(item))


def glyph_question(scene: Scene, rng: np.random.Generator) -> Question:
    """TextVQA-like: read the letter on the white tile."""
    del rng
    tile = scene.tile
    return Question(
        "glyph", "what letter is on the white tile ?", (tile.letter or "").lower(), _evidence(tile)
    )


_BUILDERS = {
    "exist": exist_question,
    "shape": shape_question,
    "colour": colour_question,
    "count": count_question,
    "position": position_question,
    "glyph": glyph_question,
}


def ask(scene: Scene, kind: str, rng: np.random.Generator) -> Question:
    """One random question of ``kind`` about ``scene``."""
    try:
        builder = _BUILDERS[kind]
    except KeyError:
        raise ValueError(f"unknown question kind {kind!r}; available: {', '.join(KINDS)}") from None
    return builder(scene, rng)


def answer_words() -> list[str]:
    """Every word an answer can be."""
    from trio_vlm.testbed.glyphs import LETTERS

    words = ["yes", "no", *COLOURS, *SHAPES, "left", "right", "top", "bottom"]
    return words + [str(n) for n in range(MAX_COUNT + 1)] + [c.lower() for c in LETTERS]
