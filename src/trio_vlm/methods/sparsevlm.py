"""SparseVLM v1.5 (Zhang et al., 2024): text-rater attention ranking with recycling of dropped tokens.

Official rule (Gumpest/SparseVLMs branch ``v1.5``, ``llava/model/language_model/modelling_sparse_llama.py``,
``score.py::attn_postprocess_topk``, ``utils.py::cluster_and_merge``): at layers 2, 6 and 15 (0-based) the
layer's own attention rows of the "rater" text tokens are averaged over heads and raters; the top image tokens
survive into the next layer; the top 30% (+1) of the dropped ones by that score are clustered (density-peak
kNN, n/10+1 clusters) on the layer's *output* and each cluster's mean is kept as one extra token. Raters are the
text tokens after the image whose ``softmax(V·Tᵀ over text).mean(over visual)`` exceeds the mean. Positions
are renumbered.

Our drops therefore sit after 3, 7 and 16 layers (``layer_list`` counts layers already run) and score with the
input of the layer before (``ctx.previous_hidden``). Deviations (docs/baselines_llm.md): raters are chosen
from the hidden states entering the scoring layer (the engine does not expose the prompt's input embeddings);
a cluster is kept at the slot of its density-peak token, not appended after the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from trio_vlm import presets
from trio_vlm.contract import Selection, Stage, StageContext
from trio_vlm.methods.base import LLMStages, check_choice
from trio_vlm.methods.density_peaks import cluster_means, density_peak_clusters
from trio_vlm.methods.llm_attention import head_mean_attention, text_after_image
from trio_vlm.methods.nms import topk_select

# score.py: pruning_loc [2, 6, 15] (0-based layers whose output is pruned) and the per-budget kept counts.
PUBLISHED: dict[tuple[str, int, str | None], dict[str, Any]] = {
    ("llava-1.5", 192, "wo_ve"): {"layer_list": (3, 7, 16), "image_token_list": (300, 200, 110)},
    ("llava-1.5", 128, "wo_ve"): {"layer_list": (3, 7, 16), "image_token_list": (303, 110, 36)},
    ("llava-1.5", 64, "wo_ve"): {"layer_list": (3, 7, 16), "image_token_list": (66, 30, 17)},
}
RECYCLE_SHARE = 0.3
TOKENS_PER_CLUSTER = 10


def recycled_counts(n_dropped: int) -> tuple[int, int]:
    """(tokens recycled, clusters formed) when ``n_dropped`` image tokens are dropped (official arithmetic)."""
    if n_dropped <= 0:
        return 0, 0
    recycled = int(n_dropped * RECYCLE_SHARE) + 1
    return recycled, int(recycled / TOKENS_PER_CLUSTER) + 1


def rater_positions(hidden_row: torch.Tensor, visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Text positions whose visual relevance ``softmax(V·Tᵀ, over text).mean(over visual)`` beats the mean
    (all of ``text`` if none does, e.g. a single text token)."""
    v, t = hidden_row[visual].float(), hidden_row[text].float()
    relevance = (v @ t.T).softmax(-1).mean(0)
    raters = text[relevance > relevance.mean()]
    return raters if raters.numel() else text


@dataclass(frozen=True, kw_only=True)
class SparseVLM(LLMStages):
    """Rater-text → image attention of the layer before each drop; top-k; recycled clusters of the dropped.

    Args:
        layer_list: layers run before each drop (official ``pruning_loc`` + 1: ``[3, 7, 16]``).
        image_token_list: image tokens kept by score at each drop; each drop also keeps one token per cluster
            (see :func:`recycled_counts`), as the official code does.
        recycle: ``False`` drops without recycling (ablation).
        position_mode: ``"compact"`` (official renumbering), ``"original"`` or ``None``.
    """

    layer_list: tuple[int, ...] = (3, 7, 16)
    image_token_list: tuple[int, ...] = (66, 30, 17)
    recycle: bool = True
    position_mode: str | None = "compact"

    name: ClassVar[str] = "sparsevlm"
    display_name: ClassVar[str] = "SparseVLM"
    paper_name: ClassVar[str | None] = "SparseVLM"
    table_order: ClassVar[int] = 30

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("recycle", self.recycle, (True, False))

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
        kept, replacement = [], []
        for g, s in zip(ctx.groups, scores):
            top = topk_select(s, g.keep)
            if not self.recycle:
                kept.append(top)
                replacement.append(None)
                continue
            idx, feats = self._recycle(ctx.hidden[g.sample, g.seq_index], s, top)
            kept.append(idx)
            replacement.append(feats)
        return Selection(kept=kept, scores=scores, replacement=replacement)

    def rater_scores(self, ctx: StageContext) -> list[torch.Tensor]:
        """Per group: the scoring layer's attention from the group's raters to its image tokens, averaged over
        heads and raters; one batched row computation for all groups."""
        hidden = ctx.previous_hidden
        raters: list[torch.Tensor] = []
        for g in ctx.groups:
            same = [h.seq_index for h in ctx.groups if h.sample == g.sample]
            text = text_after_image(same, g.seq_index, ctx.padding[g.sample])
            if text.numel() == 0:
                text = ctx.last_valid[g.sample].reshape(1)
            raters.append(rater_positions(hidden[g.sample], g.seq_index, text))
        per_sample = [[] for _ in range(hidden.shape[0])]
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
            ctx.adapter, ctx.layer_index - 1, hidden, ctx.previous_kwargs, rows, ctx.padding
        )
        out = []
        for i, g in enumerate(ctx.groups):
            lo, hi = spans[i]
            out.append(attn[g.sample, lo:hi][:, g.seq_index].mean(0))
        return out

    @staticmethod
    def _recycle(
        features: torch.Tensor, scores: torch.Tensor, top: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept local indices (top-k + one density-peak slot per cluster) and their (replaced) features."""
        dropped_mask = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
        dropped_mask[top] = False
        dropped = dropped_mask.nonzero().flatten()
        n_recycled, n_clusters = recycled_counts(int(dropped.numel()))
        if n_clusters == 0:
            return top, features[top]
        recycled = dropped[scores[dropped].topk(n_recycled).indices]  # descending score, like the official
        centres, assignment = density_peak_clusters(features[recycled], n_clusters)
        merged = cluster_means(features[recycled], assignment, n_clusters)
        slots = recycled[centres]
        idx = torch.cat([top, slots])
        feats = torch.cat([features[top], merged])
        order = torch.argsort(idx)
        return idx[order], feats[order]
