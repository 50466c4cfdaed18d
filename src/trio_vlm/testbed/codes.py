"""Fixed attribute codes: the image token the language model is first taught to read for each patch.

Training is split (``train.py``): the language model learns the questions from *ideal* image tokens — for each
patch the sum of one fixed random vector per attribute (colour, shape, letter, top-left flag, row, column) —
while the vision tower and projector learn, in parallel, to produce exactly those tokens from pixels. Both
halves can then be joined and fine-tuned together. The codes are a pure function of ``width`` and the seed.
"""

from __future__ import annotations

import torch

from trio_vlm.testbed.scene import GRID
from trio_vlm.testbed.targets import PATCH_CLASSES

CODE_SEED = 1234
CODE_STD = 0.5  # five or six summed codes ≈ unit variance per channel, like the word embeddings
CODED_LABELS = 4  # colour, shape, letter, top-left flag (the two half flags follow from row / column)


def attribute_codes(width: int, seed: int = CODE_SEED) -> list[torch.Tensor]:
    """One (classes, width) table per coded label, then one (GRID, width) table each for row and column."""
    generator = torch.Generator().manual_seed(seed)
    sizes = (*PATCH_CLASSES[:CODED_LABELS], GRID, GRID)
    return [torch.randn(n, width, generator=generator) * CODE_STD for n in sizes]


def patch_codes(labels: torch.Tensor, codes: list[torch.Tensor]) -> torch.Tensor:
    """(..., GRID·GRID, width) ideal image tokens for per-patch ``labels`` (..., GRID·GRID, ≥4) long."""
    position = torch.arange(GRID * GRID, device=labels.device)
    tables = [c.to(labels.device) for c in codes]
    out = tables[-2][position // GRID] + tables[-1][position % GRID]
    for i in range(CODED_LABELS):
        out = out + tables[i][labels[..., i]]
    return out
