"""The method test table: one cell per registered method, used by every test parametrised over methods.

A cell builds the method with a schedule that fits every tiny model (6 decoder layers, 144 LLaVA-1.5 visual
tokens; smaller NeXT tiles and Qwen images) and names the families where it cannot run, with the reason.
Adding a method to the registry without a cell here fails ``test_every_registered_method_has_a_cell``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio_vlm
from trio_vlm.methods.base import TokenMethod

FAMILIES = ("llava-1.5", "llava-next", "qwen2.5-vl")
CLIP_ONLY = "reads CLIP vision-layer inputs"


@dataclass
class Cell:
    """How to build the method for the tiny models, and the families it refuses (family -> error text)."""

    build: Callable[[], TokenMethod]
    not_applicable: dict[str, str] = field(default_factory=dict)


METHOD_TABLE: dict[str, Cell] = {
    "vanilla": Cell(lambda: trio_vlm.Vanilla()),
    "trio": Cell(lambda: trio_vlm.TRIO(layer_list=[2, 4], image_token_list=[16, 8])),
    "fastv": Cell(lambda: trio_vlm.FastV(layer_list=(2,), image_token_list=(12,))),
    "pdrop": Cell(lambda: trio_vlm.PDrop(layer_list=(1, 3, 4), image_token_list=(20, 12, 6))),
    "sparsevlm": Cell(lambda: trio_vlm.SparseVLM(layer_list=(2, 4), image_token_list=(16, 8))),
    "dart": Cell(lambda: trio_vlm.DART(layer_list=(2,), image_token_list=(16,))),
    "visionzip": Cell(lambda: trio_vlm.VisionZip(visual_token_num=16), {"qwen2.5-vl": CLIP_ONLY}),
    "holov": Cell(lambda: trio_vlm.HoloV(visual_token_num=16)),
    "scope": Cell(lambda: trio_vlm.SCOPE(visual_token_num=16), {"qwen2.5-vl": CLIP_ONLY}),
    "random": Cell(
        lambda: trio_vlm.Random(visual_token_num=14, layer_list=(3,), image_token_list=(6,), seed=3)
    ),
    "uniform": Cell(lambda: trio_vlm.Uniform(visual_token_num=14)),
}


def cell(name: str) -> Cell:
    """The table cell of a registered method (``AssertionError`` if there is none)."""
    if name not in METHOD_TABLE:
        raise AssertionError(f"method {name!r} is registered but has no cell in tests/method_table.py")
    return METHOD_TABLE[name]
