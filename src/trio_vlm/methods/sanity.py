"""Sanity baselines: a seeded random subset and a spatially strided (uniform) subset of the visual tokens.

Their presets drop once at the encoder stage (``"w_ve"``, the default: before the first decoder layer, so the
budget is also the per-layer average) or once after FastV's layer (``"wo_ve"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from trio_vlm import presets
from trio_vlm.contract import Group, Selection, StageContext
from trio_vlm.methods.base import LLMStages, check_int
from trio_vlm.methods.fastv import FASTV_LAYER, single_drop_config


def strided(n: int, k: int) -> torch.Tensor:
    """``k`` of ``range(n)`` at even strides, each at the centre of its stride: ⌊(i + ½)·n / k⌋, ascending."""
    i = torch.arange(k)
    return torch.div((2 * i + 1) * n, 2 * k, rounding_mode="floor")


def lattice(side: int, k: int) -> torch.Tensor:
    """``k`` raster indices of a ``side``×``side`` grid on an even 2-D lattice, ascending.

    ``rows = ⌊√k⌋`` and ``cols = ⌈k / rows⌉`` (capped at ``side``) lattice lines through the centres of equal
    strips (on 24×24, k=64 gives every third row and column starting at 1); when ``rows·cols > k``
    the surplus lattice points are skipped at even strides in raster order.
    """
    if not 1 <= k <= side * side:
        raise ValueError(f"cannot pick {k} tokens from a {side}x{side} grid")
    rows = math.isqrt(k)
    cols = -(-k // rows)
    if cols > side:
        cols, rows = side, -(-k // side)
    points = (strided(side, rows)[:, None] * side + strided(side, cols)[None, :]).flatten()
    return points[strided(points.numel(), k)] if points.numel() > k else points


def _square_grid(g: Group) -> int | None:
    """Side of the group's patch grid if the group is a whole square image (contiguous original indices)."""
    side = math.isqrt(g.size)
    contiguous = int(g.original[-1] - g.original[0]) + 1 == g.size
    return side if side * side == g.size and contiguous else None


def sanity_config(family: str, budget: int, mode: str | None) -> dict[str, Any]:
    """``budget`` tokens kept at the encoder stage (``"w_ve"``), or FastV's schedule with the same average
    (``"wo_ve"``)."""
    if mode == "wo_ve":
        return {"visual_token_num": None, **single_drop_config(family, budget, FASTV_LAYER)}
    if family != presets.DEFAULT_FAMILY:
        raise presets.NoPreset(f"no published encoder-stage count for {family}")
    return {"visual_token_num": budget, "layer_list": (), "image_token_list": ()}


@dataclass(frozen=True, kw_only=True)
class SanityMethod(LLMStages):
    """Schedule fields of the sanity baselines: an encoder stage and/or LLM stages (at least one)."""

    visual_token_num: int | None = None
    image_token_ratio: float | None = None
    position_mode: str | None = None

    modes: ClassVar[tuple[str, ...]] = ("w_ve", "wo_ve")

    def __post_init__(self) -> None:
        super().__post_init__()
        schedule = self.schedule()
        if not schedule.layer_list and not schedule.has_encoder_stage:
            raise ValueError(
                f"{self.name} needs a stage: set visual_token_num and/or layer_list + image_token_list"
            )

    @classmethod
    def reference_config(cls, family: str, budget: int, mode: str | None) -> dict[str, Any]:
        return sanity_config(family, budget, mode)


@dataclass(frozen=True, kw_only=True)
class Random(SanityMethod):
    """A uniformly random subset of each image's tokens at every stage (seeded).

    Draws come from one generator seeded with ``seed`` when the method is built: a fresh method with the same
    seed reproduces the same subsets for the same sequence of inputs. Scores are the random priorities (kept =
    the top ones).
    """

    seed: int = 0
    _generator: torch.Generator = field(init=False, repr=False, compare=False)

    name: ClassVar[str] = "random"
    display_name: ClassVar[str] = "random"
    table_order: ClassVar[int] = 900

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("seed", self.seed)
        object.__setattr__(self, "_generator", torch.Generator().manual_seed(int(self.seed)))

    def select(self, ctx: StageContext) -> Selection:
        kept, scores = [], []
        for g in ctx.groups:
            priority = torch.rand(g.size, generator=self._generator).to(ctx.hidden.device)
            kept.append(torch.sort(priority.topk(g.keep).indices).values)
            scores.append(priority)
        return Selection(kept=kept, scores=scores)


@dataclass(frozen=True, kw_only=True)
class Uniform(SanityMethod):
    """A spatially strided subset: an even lattice on a whole square image (:func:`lattice`), else an even
    1-D stride over the remaining tokens in order. Scores mark the kept tokens with 1, the others with 0."""

    name: ClassVar[str] = "uniform"
    display_name: ClassVar[str] = "uniform"
    table_order: ClassVar[int] = 910

    def select(self, ctx: StageContext) -> Selection:
        kept, scores = [], []
        for g in ctx.groups:
            side = _square_grid(g)
            idx = lattice(side, g.keep) if side is not None else strided(g.size, g.keep)
            idx = idx.to(ctx.hidden.device)
            score = torch.zeros(g.size, device=ctx.hidden.device)
            score[idx] = 1.0
            kept.append(idx)
            scores.append(score)
        return Selection(kept=kept, scores=scores)
