"""Dense training targets read from the scene description: per-patch labels and the scene's contents."""

from __future__ import annotations

import torch

from trio_vlm.testbed.glyphs import LETTERS
from trio_vlm.testbed.scene import COLOURS, GRID, SHAPES, Scene

COLOUR_CLASSES = len(COLOURS) + 2  # 0 background, 1..8 colours, 9 white tile
SHAPE_CLASSES = len(SHAPES) + 2  # 0 background, 1..5 shapes, 6 tile
LETTER_CLASSES = len(LETTERS) + 1  # 0 no letter
CORNER_CLASSES = 2  # 1 on the top-left patch of an object block (one token per object, for counting)
HALF_CLASSES = 2  # which half of the image the patch lies in (left/right, then top/bottom)
PATCH_CLASSES = (COLOUR_CLASSES, SHAPE_CLASSES, LETTER_CLASSES, CORNER_CLASSES, HALF_CLASSES, HALF_CLASSES)
_COLOUR_IDS = {c: i + 1 for i, c in enumerate(COLOURS)}
_SHAPE_IDS = {s: i + 1 for i, s in enumerate(SHAPES)}
# Multi-hot scene summary: colours, shapes, (colour, shape) pairs, letter.
SUMMARY_SIZE = len(COLOURS) + len(SHAPES) + len(COLOURS) * len(SHAPES) + len(LETTERS)


def patch_labels(scene: Scene) -> torch.Tensor:
    """(GRID·GRID, 6) long per patch: colour, shape and letter class of the object block covering it, whether
    it is a block's top-left patch, and whether it lies in the right half and in the bottom half."""
    labels = torch.zeros(GRID * GRID, len(PATCH_CLASSES), dtype=torch.long)
    for item in scene.items:
        idx = torch.tensor(item.patches())
        if item.is_tile:
            kind = [COLOUR_CLASSES - 1, SHAPE_CLASSES - 1, LETTERS.index(item.letter) + 1]
        else:
            kind = [_COLOUR_IDS[item.colour], _SHAPE_IDS[item.shape], 0]
        labels[idx, :3] = torch.tensor(kind)
        labels[item.row * GRID + item.col, 3] = 1
    flat = torch.arange(GRID * GRID)
    labels[:, 4] = (flat % GRID >= GRID // 2).long()
    labels[:, 5] = (flat.div(GRID, rounding_mode="floor") >= GRID // 2).long()
    return labels


def scene_summary(scene: Scene) -> torch.Tensor:
    """(SUMMARY_SIZE,) float multi-hot of which colours, shapes, colour-shape pairs and letter appear."""
    out = torch.zeros(SUMMARY_SIZE)
    n_c, n_s = len(COLOURS), len(SHAPES)
    for item in scene.shapes:
        c, s = _COLOUR_IDS[item.colour] - 1, _SHAPE_IDS[item.shape] - 1
        out[c] = out[n_c + s] = out[n_c + n_s + c * n_s + s] = 1.0
    out[n_c + n_s + n_c * n_s + LETTERS.index(scene.tile.letter)] = 1.0
    return out


# What a question word naming something knows after reading the image: colours, shapes and letters of the
# items it names (multi-hot), which sides they lie on (left, right, top, bottom; all of them must), their count.
NAMED_SIZE = COLOUR_CLASSES + SHAPE_CLASSES + LETTER_CLASSES + 4 + 9


def named_targets(grounding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(R, T, NAMED_SIZE) float targets for question words from their ``grounding`` (R, T, GRID·GRID) bool
    (the patches each word names) and the per-patch ``labels`` (R, GRID·GRID, 6) of the row's image."""
    named = grounding.float()
    parts = []
    for i, classes in enumerate(PATCH_CLASSES[:3]):
        onehot = torch.nn.functional.one_hot(labels[..., i], classes).float()
        parts.append((torch.einsum("rtp,rpc->rtc", named, onehot) > 0).float())
    position = torch.arange(GRID * GRID, device=grounding.device)
    row, col = position // GRID, position % GRID
    some = grounding.any(-1)
    for inside in (col < GRID // 2, col >= GRID // 2, row < GRID // 2, row >= GRID // 2):
        parts.append((some & ~(grounding & ~inside).any(-1)).float()[..., None])
    count = torch.einsum("rtp,rp->rt", named, labels[..., 3].float()).round().long().clamp(max=8)
    parts.append(torch.nn.functional.one_hot(count, 9).float())
    return torch.cat(parts, -1)
