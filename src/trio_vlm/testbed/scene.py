"""Seeded random scenes: coloured shapes and one lettered tile on a 24×24 patch grid (the scene description)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trio_vlm.testbed.glyphs import LETTERS

GRID = 24  # patches per side (LLaVA-1.5: 336 px / 14 px)
PATCH = 14  # pixels per patch side
IMAGE_SIZE = GRID * PATCH
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (45, 75, 215),
    "yellow": (230, 205, 35),
    "purple": (135, 55, 185),
    "orange": (240, 135, 25),
    "cyan": (35, 190, 205),
    "pink": (235, 105, 175),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond")
TILE_SIZE = 2  # patches per side of the lettered tile


@dataclass(frozen=True)
class Item:
    """One object occupying the ``size``×``size`` patch block whose top-left patch is (``row``, ``col``).

    A shape has ``shape`` and ``colour``; the tile has ``letter`` (``shape == "tile"``, colour white).
    """

    shape: str
    colour: str
    row: int
    col: int
    size: int
    letter: str | None = None

    @property
    def is_tile(self) -> bool:
        return self.shape == "tile"

    def patches(self) -> list[int]:
        """Raster indices (row·GRID + col) of the patches the block covers."""
        return [(self.row + dy) * GRID + self.col + dx for dy in range(self.size) for dx in range(self.size)]

    def centre(self) -> tuple[float, float]:
        """Block centre in patch units, (row, col)."""
        return self.row + self.size / 2, self.col + self.size / 2


@dataclass(frozen=True)
class Scene:
    """The full description of one image: its shapes (unique colours), its tile and the rendering seed."""

    items: tuple[Item, ...]
    render_seed: int
    background: int = 128
    clutter: int = 40

    @property
    def shapes(self) -> list[Item]:
        return [it for it in self.items if not it.is_tile]

    @property
    def tile(self) -> Item:
        return next(it for it in self.items if it.is_tile)


def _free(occupied: np.ndarray, row: int, col: int, size: int) -> bool:
    """Whether the block plus a one-patch border is unoccupied (so blocks never touch)."""
    r0, c0 = max(0, row - 1), max(0, col - 1)
    return not occupied[r0 : row + size + 1, c0 : col + size + 1].any()


def _place(rng: np.random.Generator, occupied: np.ndarray, size: int) -> tuple[int, int]:
    for _ in range(500):
        row, col = (int(v) for v in rng.integers(0, GRID - size + 1, size=2))
        if _free(occupied, row, col, size):
            occupied[row : row + size, col : col + size] = True
            return row, col
    raise RuntimeError("could not place an object on the grid (too many objects)")


def _one_sided(item: Item) -> bool:
    """Whether the block lies entirely on one side of the vertical or of the horizontal middle line."""
    half = GRID // 2
    return any(start + item.size <= half or start >= half for start in (item.row, item.col))


def sample_scene(rng: np.random.Generator, min_shapes: int = 5, max_shapes: int = 8) -> Scene:
    """A scene of ``min_shapes``..``max_shapes`` shapes of distinct colours, plus one lettered tile. At least
    one shape kind occurs exactly once (colour questions) and one shape lies on one side of a middle line
    (position questions); scenes breaking either are redrawn from the same generator."""
    while True:
        scene = _draw_scene(rng, min_shapes, max_shapes)
        if any(_one_sided(it) for it in scene.shapes):
            return scene


def _draw_scene(rng: np.random.Generator, min_shapes: int, max_shapes: int) -> Scene:
    if not 1 <= min_shapes <= max_shapes <= len(COLOURS):
        raise ValueError(
            f"need 1 <= min_shapes <= max_shapes <= {len(COLOURS)}, got {min_shapes}, {max_shapes}"
        )
    n = int(rng.integers(min_shapes, max_shapes + 1))
    colours = [str(c) for c in rng.permutation(list(COLOURS))[:n]]
    while True:
        shapes = [SHAPES[int(i)] for i in rng.integers(0, len(SHAPES), size=n)]
        if any(shapes.count(s) == 1 for s in shapes):
            break
    occupied = np.zeros((GRID, GRID), dtype=bool)
    items = []
    row, col = _place(rng, occupied, TILE_SIZE)
    items.append(Item("tile", "white", row, col, TILE_SIZE, letter=LETTERS[int(rng.integers(len(LETTERS)))]))
    for shape, colour in zip(shapes, colours):
        size = int(rng.integers(2, 4))
        row, col = _place(rng, occupied, size)
        items.append(Item(shape, colour, row, col, size))
    return Scene(
        items=tuple(items),
        render_seed=int(rng.integers(2**31)),
        background=int(rng.integers(95, 165)),
        clutter=int(rng.integers(30, 60)),
    )
