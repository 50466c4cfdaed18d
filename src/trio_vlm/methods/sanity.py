"""Sanity baselines: a seeded random subset and a spatially strided (uniform) subset of the visual tokens.

Their presets drop once at the encoder stage (before the first decoder layer, so the budget is also the
per-layer average); both work at LLM stages too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from trio_vlm.methods.base import Group, Selection, StageContext, TokenMethod
from trio_vlm.methods.baseline_presets import check_budget, check_positions, family_shape, single_drop_keep
from trio_vlm.methods.fastv import FASTV_LAYER
from trio_vlm.schedule import Schedule


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


def _make_schedule(
    method: str, layers: tuple[int, ...], counts: tuple[int, ...], visual_token_num: int | None
) -> Schedule:
    """The schedule, which must have at least one stage."""
    schedule = Schedule(layers, counts, visual_token_num)
    if not schedule.layer_list and not schedule.has_encoder_stage:
        raise ValueError(f"{method} needs a stage: set visual_token_num and/or layer_list + image_token_list")
    return schedule


def _sanity_schedule(method: str, family: str, budget: int, mode: str | None) -> dict:
    """Schedule fields of a sanity preset: the encoder stage (mode None/"w_ve") or FastV's drop ("wo_ve")."""
    layers, visual = family_shape(method, family)
    budget = check_budget(method, budget, visual)
    if mode in (None, "w_ve"):
        return {"layer_list": (), "image_token_list": (), "visual_token_num": budget}
    if mode == "wo_ve":
        keep = single_drop_keep(budget, FASTV_LAYER, layers, visual)
        return {"layer_list": (FASTV_LAYER,), "image_token_list": (keep,), "visual_token_num": None}
    raise ValueError(
        f"{method} mode must be None, 'w_ve' (encoder stage) or 'wo_ve' (FastV's schedule), got {mode!r}"
    )


@dataclass
class Random(TokenMethod):
    """A uniformly random subset of each image's tokens at every stage (seeded).

    Draws come from one generator seeded with ``seed`` when the method is built: a fresh method with the same
    seed reproduces the same subsets for the same sequence of inputs. Scores are the random priorities (kept =
    the top ones).
    """

    layer_list: tuple[int, ...] = ()
    image_token_list: tuple[int, ...] = ()
    visual_token_num: int | None = None
    seed: int = 0
    positions: str | None = None
    _generator: torch.Generator = field(init=False, repr=False, compare=False)

    name: ClassVar[str] = "random"

    def __post_init__(self) -> None:
        check_positions(self.positions)
        self._schedule = _make_schedule(
            self.name, self.layer_list, self.image_token_list, self.visual_token_num
        )
        self.layer_list, self.image_token_list = self._schedule.layer_list, self._schedule.image_token_list
        self._generator = torch.Generator().manual_seed(int(self.seed))

    @classmethod
    def preset(cls, family: str, budget: int, mode: str | None = None, **overrides) -> Random:
        """``budget`` tokens kept at the encoder stage (``mode`` None/``"w_ve"``), or FastV's schedule with the
        same average (``"wo_ve"``)."""
        return cls(**_sanity_schedule("Random", family, budget, mode), **overrides)

    def select(self, ctx: StageContext) -> Selection:
        kept, scores = [], []
        for g in ctx.groups:
            priority = torch.rand(g.size, generator=self._generator).to(ctx.hidden.device)
            kept.append(torch.sort(priority.topk(g.keep).indices).values)
            scores.append(priority)
        return Selection(kept=kept, scores=scores)


@dataclass
class Uniform(TokenMethod):
    """A spatially strided subset: an even lattice on a whole square image (:func:`lattice`), else an even
    1-D stride over the remaining tokens in order. Scores mark the kept tokens with 1, the others with 0."""

    layer_list: tuple[int, ...] = ()
    image_token_list: tuple[int, ...] = ()
    visual_token_num: int | None = None
    positions: str | None = None

    name: ClassVar[str] = "uniform"

    def __post_init__(self) -> None:
        check_positions(self.positions)
        self._schedule = _make_schedule(
            self.name, self.layer_list, self.image_token_list, self.visual_token_num
        )
        self.layer_list, self.image_token_list = self._schedule.layer_list, self._schedule.image_token_list

    @classmethod
    def preset(cls, family: str, budget: int, mode: str | None = None, **overrides) -> Uniform:
        """``budget`` tokens kept at the encoder stage (``mode`` None/``"w_ve"``), or FastV's schedule with the
        same average (``"wo_ve"``)."""
        return cls(**_sanity_schedule("Uniform", family, budget, mode), **overrides)

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
