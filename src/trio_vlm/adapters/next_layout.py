"""Reading LLaVA-NeXT's packed image tokens back into tiles: base image, unpadded crop grid, row newlines.

``pack_image_features`` lays an image out as ``[base tile (s·s tokens)] + H' rows of [W' crop tokens,
newline]`` where the H'×W' crop grid is the (n_h·s)×(n_w·s) grid of the n_h×n_w crop tiles with the
padding of the any-resolution resize cut away (``unpad_image``). This module finds those pieces in a prompt
and maps every crop token back to its tile and patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image


@dataclass
class PackedImage:
    """Positions of one packed image: base tile, crop tokens (row-major, H'×W'), newline positions."""

    base: torch.Tensor
    crops: torch.Tensor
    newlines: torch.Tensor
    height: int
    width: int


def parse_run(run: torch.Tensor, flags: list[bool], base_len: int) -> list[PackedImage]:
    """Split one run of consecutive image-token positions (``run``, on the model's device) into packed images.

    ``flags`` (host) marks the run's newline tokens. Each image is ``base_len`` non-newline tokens, then rows of
    equal width that each end in a newline (a one-tile image has a single empty row). Only host lists are read:
    the positions are sliced on the device."""
    images, i, n = [], 0, len(flags)
    while i < n:
        if i + base_len > n or any(flags[i : i + base_len]):
            raise ValueError(
                f"could not read LLaVA-NeXT image tokens: expected a base tile of {base_len} tokens at offset {i}"
            )
        base = run[i : i + base_len]
        i += base_len
        if i >= n or True not in flags[i:]:
            raise ValueError("could not read LLaVA-NeXT image tokens: no row newline after the base tile")
        width = flags.index(True, i) - i
        rows = []
        while i + width < n and flags[i + width] and not any(flags[i : i + width]):
            rows.append(i)
            i += width + 1
        crops = torch.cat([run[r : r + width] for r in rows]) if width else run[:0]
        newlines = torch.cat([run[r + width : r + width + 1] for r in rows]) if rows else run[:0]
        images.append(PackedImage(base, crops, newlines, len(rows) if width else 0, width))
    return images


def grid_indices(tiles_h: int, tiles_w: int, side: int, image_size: tuple[int, int]) -> torch.Tensor:
    """(H', W') flat indices into the (tiles_h·side)×(tiles_w·side) crop grid that survive unpadding for an
    image of ``image_size`` (height, width) — computed by the model's own ``unpad_image``."""
    grid = torch.arange(tiles_h * side * tiles_w * side).view(1, tiles_h * side, tiles_w * side)
    return unpad_image(grid, torch.as_tensor(image_size))[0]


def exact_grid(
    image_size: tuple[int, int], pinpoints: list, tile_px: int, side: int
) -> tuple[int, int, torch.Tensor]:
    """(tiles high, tiles wide, surviving indices) for an image whose size is known."""
    tiles_h, tiles_w = get_anyres_image_grid_shape(image_size, pinpoints, tile_px)
    return tiles_h, tiles_w, grid_indices(tiles_h, tiles_w, side, image_size)


def candidate_grids(height: int, width: int, pinpoints: list, tile_px: int, side: int):
    """Every (tiles high, tiles wide, surviving indices) that unpadding could turn into an H'×W' crop grid:
    one side uncut, the other cut symmetrically (``unpad_image`` removes equal padding on both ends)."""
    shapes = sorted({(h // tile_px, w // tile_px) for h, w in pinpoints}, key=lambda s: (s[0] * s[1], s))
    for tiles_h, tiles_w in shapes:
        full_h, full_w = tiles_h * side, tiles_w * side
        if width == full_w and height <= full_h and (full_h - height) % 2 == 0:
            top, left = (full_h - height) // 2, 0
        elif height == full_h and width <= full_w and (full_w - width) % 2 == 0:
            top, left = 0, (full_w - width) // 2
        else:
            continue
        rows = torch.arange(top, top + height)[:, None]
        cols = torch.arange(left, left + width)[None, :]
        yield tiles_h, tiles_w, rows * full_w + cols
