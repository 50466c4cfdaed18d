"""HoloV (NeurIPS 2025): holistic, crop-wise allocation of the visual-token budget.

Official code: obananas/HoloV ``llava/model/utils.py::HoloV`` (called from ``llava/model/llava_arch.py`` on
the projected features with the head-averaged [CLS] attention of vision layer -2,
``multimodal_encoder/clip_encoder.py::feature_select``). The output runs crop by crop: a crop whose quota
covers it whole in raster order, otherwise its ``topk`` tokens by attention (descending); a quota shortfall is
padded with zero vectors at the end. Options and deviations: docs/baselines_encoder.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from trio_vlm.contract import Selection, StageContext
from trio_vlm.methods.base import check_choice, check_float, check_int
from trio_vlm.methods.encoder_stage import EncoderStageMethod

EPS = 1e-6
#: What happens to a quota shortfall: zero vectors (official), re-split over the crops with room, or nothing.
SHORTFALLS = ("zeros", "reallocate", "none")
#: Sequence orders: crop by crop, descending attention within a crop (official), or raster order.
ORDERS = ("official", "raster")


def default_crops(n_tokens: int, keep: int) -> int:
    """``int(1024/576 · N/keep)`` (5/8/16 crops for 192/128/64 of 576 tokens), at least 1, at most N."""
    return max(1, min(n_tokens, (1024 * n_tokens) // (576 * keep)))


def crop_sizes(n_tokens: int, crops: int) -> list[int]:
    """Contiguous 1-D crops of the raster sequence: ``N // crops`` each, the first ``N % crops`` one longer."""
    base, extra = divmod(n_tokens, crops)
    sizes = [base + (1 if c < extra else 0) for c in range(crops)]
    return [size for size in sizes if size > 0]  # the official code skips empty crops


def crop_scores(
    features: torch.Tensor, attention: torch.Tensor, sizes: list[int], alpha: float, attention_scale: float
) -> torch.Tensor:
    """Mean token score per crop: ``scale_a·attn + alpha·var(similarity)·(mean|scale_a·attn| / mean|var|)``.

    ``var`` is the official statistic: over each row of the crop's cosine-similarity matrix with its diagonal
    zeroed, squared deviations from the off-diagonal mean, divided by (size - 1). A one-token crop scores its
    raw attention. All crops at once (block-diagonal masks), without a host round trip.
    """
    device = attention.device
    n_crops = len(sizes)
    size_t = torch.tensor(sizes, device=device)
    crop = torch.repeat_interleave(torch.arange(n_crops, device=device), size_t)
    same = crop[:, None] == crop[None, :]
    unit = features.float() / (features.float().norm(dim=1, keepdim=True) + EPS)
    sim = (unit @ unit.T) * (same & ~torch.eye(crop.numel(), dtype=torch.bool, device=device))
    others = (size_t[crop] - 1).clamp(min=1).float()
    mean = sim.sum(1) / others
    var = (((sim - mean[:, None]) ** 2) * same).sum(1) / others

    def crop_mean(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n_crops, device=device).index_add_(0, crop, values) / size_t.float()

    scaled = attention.float() * attention_scale
    var_scale = crop_mean(scaled.abs()) / (crop_mean(var.abs()) + EPS)
    scores = crop_mean(scaled + alpha * var * var_scale[crop])
    return torch.where(size_t > 1, scores, crop_mean(attention.float()))


def _proportional(weights: list[float], total: int) -> list[int]:
    """The official split of ``total``: floor(w·total), then +1 for the largest weights while any is left."""
    w = torch.tensor(weights, dtype=torch.float32)
    w = w / (w.sum() + EPS)
    alloc = (w * total).floor().long()
    remaining = total - int(alloc.sum())
    if remaining > 0:
        alloc[torch.topk(w, min(remaining, w.numel())).indices] += 1
    return alloc.tolist()


def allocate(weights: list[float], sizes: list[int], keep: int, reallocate: bool = False) -> list[int]:
    """Tokens kept per crop. Official: proportional split, each crop capped at its size (the excess is lost
    and padded with zero tokens). ``reallocate``: hand the excess to the crops with room, again in proportion
    to their weights, until ``keep`` tokens are placed."""
    alloc = [min(max(a, 0), s) for a, s in zip(_proportional(weights, keep), sizes)]
    while reallocate and sum(alloc) < keep:
        room = [c for c in range(len(sizes)) if alloc[c] < sizes[c]]
        extra = _proportional([weights[c] for c in room], keep - sum(alloc))
        for c, e in zip(room, extra):
            alloc[c] = min(alloc[c] + e, sizes[c])
    return alloc


def holov_select(
    features: torch.Tensor,
    attention: torch.Tensor,
    keep: int,
    crops: int,
    alpha: float = 0.09,
    attention_scale: float = 1e3,
    reallocate: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HoloV's kept tokens: crop quotas by crop score, within a crop the top tokens by attention.

    Returns ``(kept, order)``: ``kept`` ascending, and ``order`` the permutation of ``kept`` in the official
    output order (crop by crop; a crop kept whole in raster order, else by descending attention, ties by
    index). Fewer than ``keep`` tokens when a capped crop's excess is lost (``reallocate=False``)."""
    sizes = crop_sizes(attention.numel(), crops)
    weights = crop_scores(features, attention, sizes, alpha, attention_scale).tolist()
    alloc = torch.tensor(allocate(weights, sizes, keep, reallocate), device=attention.device)
    size_t = torch.tensor(sizes, device=attention.device)
    crop = torch.repeat_interleave(torch.arange(len(sizes), device=attention.device), size_t)
    # each crop's tokens by descending attention (ties by index), crops in order
    by_attention = torch.sort(attention.float(), descending=True, stable=True).indices
    ranked = by_attention[torch.sort(crop[by_attention], stable=True).indices]
    rank = torch.arange(ranked.numel(), device=ranked.device) - (torch.cumsum(size_t, 0) - size_t)[crop]
    whole = alloc >= size_t  # a crop kept whole keeps its raster order
    by_position = torch.arange(ranked.numel(), device=ranked.device)
    chosen = torch.where(whole[crop], by_position, ranked)[rank < alloc[crop]]
    kept = torch.sort(chosen)
    return kept.values, torch.argsort(kept.indices)


@dataclass(frozen=True, kw_only=True)
class HoloV(EncoderStageMethod):
    """Keep ``visual_token_num`` projected visual tokens per image, spread over contiguous crops by score.

    Args:
        visual_token_num: tokens per image entering the LLM.
        crops: number of contiguous 1-D crops; ``None`` → ``int(1024/576 · N/keep)`` (5/8/16 at 192/128/64).
        alpha: weight of the similarity-variance term (official 0.09).
        attention_scale: factor on the [CLS] attention in the token score (official 1e3).
        attention_layer: vision layer whose head-averaged [CLS] attention is used (official -2).
        shortfall: when capped crops cannot place the whole quota: ``"zeros"`` (official) appends that many
            zero vectors after the image's tokens; ``"reallocate"`` gives the excess to the crops with room
            (exactly ``visual_token_num`` real tokens); ``"none"`` keeps fewer tokens.
        order: ``"official"`` (crop by crop, descending attention within a crop not kept whole) or
            ``"raster"``.
    """

    crops: int | None = None
    alpha: float = 0.09
    attention_scale: float = 1e3
    attention_layer: int = -2
    shortfall: str = "zeros"
    order: str = "official"

    name: ClassVar[str] = "holov"
    display_name: ClassVar[str] = "HoloV"
    paper_name: ClassVar[str | None] = "HoloV"
    table_order: ClassVar[int] = 70

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.crops is not None:
            check_int("crops", self.crops, low=1)
        check_float("alpha", self.alpha)
        check_float("attention_scale", self.attention_scale)
        check_int("attention_layer", self.attention_layer)
        check_choice("shortfall", self.shortfall, SHORTFALLS)
        check_choice("order", self.order, ORDERS)

    def crops_for(self, n_tokens: int, keep: int) -> int:
        return min(n_tokens, self.crops) if self.crops is not None else default_crops(n_tokens, keep)

    def cls_attention_layers(self) -> tuple[int, ...]:
        return (self.attention_layer,)

    def select(self, ctx: StageContext) -> Selection:
        attention = ctx.cls_attention[self.attention_layer]
        out = Selection(kept=[], scores=[], order=[], appended=[])
        for g in ctx.groups:
            attn = attention[g.image_row].float()
            feats = ctx.hidden[g.sample, g.seq_index]
            kept, order = holov_select(
                feats,
                attn,
                g.keep,
                self.crops_for(g.size, g.keep),
                self.alpha,
                self.attention_scale,
                self.shortfall == "reallocate",
            )
            missing = g.keep - kept.numel()
            out.kept.append(kept)
            out.scores.append(attn)
            out.order.append(order if self.order == "official" else None)
            padded = missing > 0 and self.shortfall == "zeros"
            out.appended.append(feats.new_zeros(missing, feats.shape[1]) if padded else None)
        return out
