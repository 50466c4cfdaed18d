"""SparseVLM v1.5 (Zhang et al., 2024): text-rater attention ranking with recycling of dropped tokens.

Official code: Gumpest/SparseVLMs branch ``v1.5``, ``llava/model/language_model/modelling_sparse_llama.py``
(``LlamaDynamicvitModel.forward``, inference branch; ``LlamaDynamicvitFlashAttention2.forward`` with
``return_logits``), ``score.py::attn_postprocess_topk``, ``utils.py::cluster_and_merge``. Before the first decoder
layer the "raters" are chosen once from the input embeddings: the text tokens after the image whose
``softmax(V·Tᵀ over text).mean(over visual)`` exceeds the mean. At layers 2, 6 and 15 (0-based) the layer's own
softmax attention rows of the raters, averaged over heads and then raters, rank the image tokens; the top ones
survive; the top 30% (+1) of the dropped ones by that score are clustered (density-peak kNN, n/10+1 clusters)
on the layer's *output* and each cluster's mean is appended after the kept image tokens; positions are
renumbered. Our drops therefore sit after 3, 7 and 16 layers (``layer_list`` counts layers already run) and
score with the input of the layer before (``ctx.previous_hidden``). Options and deviations: docs/baselines_llm.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from trio_vlm import presets
from trio_vlm.contract import Group, Selection, Stage, StageContext
from trio_vlm.methods.base import LLMStages, check_choice
from trio_vlm.methods.density_peaks import cluster_means, density_peak_clusters
from trio_vlm.methods.llm_attention import SCORE_DTYPES, head_mean_attention, score_dtype_of, text_after_image
from trio_vlm.methods.nms import topk_select

# score.py: pruning_loc [2, 6, 15] (0-based layers whose output is pruned) and the per-budget kept counts.
PUBLISHED: dict[tuple[str, int, str | None], dict[str, Any]] = {
    ("llava-1.5", 192, "wo_ve"): {"layer_list": (3, 7, 16), "image_token_list": (300, 200, 110)},
    ("llava-1.5", 128, "wo_ve"): {"layer_list": (3, 7, 16), "image_token_list": (303, 110, 36)},
    ("llava-1.5", 64, "wo_ve"): {"layer_list": (3, 7, 16), "image_token_list": (66, 30, 17)},
}
RECYCLE_SHARE = 0.3
TOKENS_PER_CLUSTER = 10
#: Where the raters come from: the prompt's input embeddings, once (official), or each scoring layer's input.
RATERS = ("prompt", "per_stage")
#: Where recycled clusters go: after the kept image tokens (official), or into their centre token's slot.
CLUSTERS = ("appended", "centre_slot")


def recycled_counts(n_dropped: int) -> tuple[int, int]:
    """(tokens recycled, clusters formed) when ``n_dropped`` image tokens are dropped (official arithmetic)."""
    if n_dropped <= 0:
        return 0, 0
    recycled = int(n_dropped * RECYCLE_SHARE) + 1
    return recycled, int(recycled / TOKENS_PER_CLUSTER) + 1


def rater_mask(visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Which of the ``text`` rows (T, D) rate the image ``visual`` (N, D): ``softmax(V·Tᵀ, over text)`` averaged
    over the visual rows beats its mean (computed in the rows' dtype). All of them if none does (e.g. one text
    token, where the official code would average over no rater)."""
    relevance = (visual @ text.T).softmax(-1).mean(0)
    mask = relevance > relevance.mean()
    return mask if bool(mask.any()) else torch.ones_like(mask)


@dataclass(frozen=True, kw_only=True)
class SparseVLM(LLMStages):
    """Rater-text → image attention of the layer before each drop; top-k; recycled clusters of the dropped.

    Args:
        layer_list: layers run before each drop (official ``pruning_loc`` + 1: ``[3, 7, 16]``).
        image_token_list: image tokens kept by score at each drop; each drop also keeps one token per cluster
            (see :func:`recycled_counts`), as the official code does.
        recycle: ``False`` drops without recycling (ablation).
        raters: ``"prompt"`` (official: chosen once from the prompt's input embeddings over the whole image) or
            ``"per_stage"`` (re-chosen at each drop from the scoring layer's input over the image tokens left).
        clusters: ``"appended"`` (official: the cluster tokens follow the kept image tokens) or
            ``"centre_slot"`` (each cluster replaces its density-peak token in place).
        score_dtype: ``"model"`` (official: rater relevance and attention in the model's dtype) or ``"float32"``.
        position_mode: ``"compact"`` (official renumbering), ``"original"`` or ``None``.
    """

    layer_list: tuple[int, ...] = (3, 7, 16)
    image_token_list: tuple[int, ...] = (66, 30, 17)
    recycle: bool = True
    raters: str = "prompt"
    clusters: str = "appended"
    score_dtype: str = "model"
    position_mode: str | None = "compact"

    name: ClassVar[str] = "sparsevlm"
    display_name: ClassVar[str] = "SparseVLM"
    paper_name: ClassVar[str | None] = "SparseVLM"
    table_order: ClassVar[int] = 30

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("recycle", self.recycle, (True, False))
        check_choice("raters", self.raters, RATERS)
        check_choice("clusters", self.clusters, CLUSTERS)
        check_choice("score_dtype", self.score_dtype, SCORE_DTYPES)

    @classmethod
    def reference_config(cls, family: str, budget: int, mode: str | None) -> dict[str, Any]:
        """The official 192/128/64 schedules (score.py); other budgets: the nearest, fitted."""
        return presets.published_schedule(cls, PUBLISHED, family, budget, mode)

    def stage_output(self, stage: Stage, keep: int, available: int) -> int:
        """Kept tokens plus one merged token per cluster of the recycled dropped ones."""
        return keep + (recycled_counts(available - keep)[1] if self.recycle else 0)

    def select(self, ctx: StageContext) -> Selection:
        if ctx.previous_hidden is None or ctx.previous_kwargs is None:
            raise RuntimeError(
                "SparseVLM needs the input of the scoring layer (an LLM stage after layer >= 1)"
            )
        scores = self.rater_scores(ctx)
        kept, replacement, appended = [], [], []
        for g, s in zip(ctx.groups, scores):
            top = topk_select(s, g.keep)
            idx, feats, extra = top, None, None
            if self.recycle:
                clusters = self._clusters(ctx.hidden[g.sample, g.seq_index], s, top)
                if clusters is not None and self.clusters == "appended":
                    extra = clusters[2].to(ctx.hidden.dtype)
                elif clusters is not None:
                    idx, feats = self._in_centre_slots(ctx.hidden[g.sample, g.seq_index], top, *clusters)
            kept.append(idx)
            replacement.append(feats)
            appended.append(extra)
        return Selection(kept=kept, scores=scores, replacement=replacement, appended=appended)

    # ---- raters and their attention ------------------------------------------------------------------
    def _raters(self, ctx: StageContext, g: Group) -> torch.Tensor:
        """Current positions of the group's raters (sample ``g.sample``)."""
        dtype = score_dtype_of(self.score_dtype, ctx.hidden)
        b = g.sample
        if self.raters == "per_stage":
            same = [h.seq_index for h in ctx.groups if h.sample == b]
            text = text_after_image(same, g.seq_index, ctx.padding[b])
            if text.numel() == 0:
                return ctx.last_valid[b].reshape(1)
            hidden = ctx.previous_hidden[b].to(dtype)
            return text[rater_mask(hidden[g.seq_index], hidden[text])]
        if ctx.prompt_embeds is None or ctx.prompt_index is None or ctx.prompt_image is None:
            raise RuntimeError("SparseVLM's prompt raters need the prompt's input embeddings from the engine")
        index, image_of = ctx.prompt_index[b], ctx.prompt_image[b].to(ctx.hidden.device)
        visual = (image_of == g.image).nonzero().flatten()  # the image's prompt positions, before any drop
        real = ctx.padding[b] & (index >= 0)
        text = (real & (image_of[index.clamp(min=0)] < 0) & (index > visual.max())).nonzero().flatten()
        if text.numel() == 0:
            return ctx.last_valid[b].reshape(1)
        embeds = ctx.prompt_embeds[b].to(device=ctx.hidden.device, dtype=dtype)
        return text[rater_mask(embeds[visual], embeds[index[text]])]

    def rater_scores(self, ctx: StageContext) -> list[torch.Tensor]:
        """Per group: the scoring layer's attention from the group's raters to its image tokens, averaged over
        heads and then raters; one batched row computation for all groups."""
        hidden = ctx.previous_hidden
        raters = [self._raters(ctx, g) for g in ctx.groups]
        per_sample: list[list[int]] = [[] for _ in range(hidden.shape[0])]
        for i, g in enumerate(ctx.groups):
            per_sample[g.sample].append(i)
        width = max(sum(raters[i].numel() for i in idx) for idx in per_sample if idx)
        rows = ctx.last_valid[:, None].repeat(1, width)
        spans: dict[int, tuple[int, int]] = {}
        for b, idx in enumerate(per_sample):
            start = 0
            for i in idx:
                n = raters[i].numel()
                rows[b, start : start + n] = raters[i]
                spans[i] = (start, start + n)
                start += n
        attn = head_mean_attention(
            ctx.adapter,
            ctx.layer_index - 1,
            hidden,
            ctx.previous_kwargs,
            rows,
            ctx.padding,
            score_dtype_of(self.score_dtype, ctx.hidden),
        )
        out = []
        for i, g in enumerate(ctx.groups):
            lo, hi = spans[i]
            out.append(attn[g.sample, lo:hi][:, g.seq_index].mean(0))
        return out

    # ---- recycling -----------------------------------------------------------------------------------
    @staticmethod
    def _clusters(
        features: torch.Tensor, scores: torch.Tensor, top: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(recycled local indices in descending score, centre positions among them in cluster order, the
        (n_clusters, D) cluster means in that order), or ``None`` when nothing was dropped."""
        dropped_mask = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
        dropped_mask[top] = False
        dropped = dropped_mask.nonzero().flatten()
        n_recycled, n_clusters = recycled_counts(int(dropped.numel()))
        if n_clusters == 0:
            return None
        recycled = dropped[scores[dropped].float().topk(n_recycled).indices]  # descending, like the official
        centres, assignment = density_peak_clusters(features[recycled], n_clusters)
        merged = cluster_means(features[recycled], assignment, n_clusters)
        return recycled, centres, merged

    @staticmethod
    def _in_centre_slots(
        features: torch.Tensor,
        top: torch.Tensor,
        recycled: torch.Tensor,
        centres: torch.Tensor,
        merged: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept local indices (top-k + each cluster's density-peak slot) and their (replaced) features."""
        idx = torch.cat([top, recycled[centres]])
        feats = torch.cat([features[top], merged.to(features.dtype)])
        order = torch.argsort(idx)
        return idx[order], feats[order]
