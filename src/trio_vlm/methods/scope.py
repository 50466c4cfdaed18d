"""SCOPE (saliency-coverage token selection): greedy facility-location coverage weighted by [CLS] attention.

Official code: kinredon/SCOPE ``scope/clip_encoder.py`` (``CLIPVisionTower_SCOPE.forward`` and ``SCOPE``),
``scope/main.py::SCOPE(model, num_token)``. The official forward keeps ``int(num_token / b)`` tokens per image
when the tower encodes ``b`` images at once (its evaluation runs batch 1); ``batch_split=True`` reproduces that.
See docs/baselines_encoder.md for deviations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from trio_vlm.contract import Selection, StageContext
from trio_vlm.methods.base import check_choice, check_float, check_int
from trio_vlm.methods.clip_features import feature_input_index, patch_features
from trio_vlm.methods.encoder_stage import EncoderStageMethod

COMBINES = ("multi", "add")


def scope_select(
    features: torch.Tensor, attention: torch.Tensor, keep: int, alpha: float = 1.0, combine: str = "multi"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy selection of ``keep`` tokens; returns (ascending indices, first-step scores).

    With ``cover[j]`` the best cosine similarity of token ``j`` to any token picked so far (starting at 0),
    each step picks the unpicked ``i`` maximising ``gain(i) ∘ attn(i)^alpha`` where
    ``gain(i) = Σ_j max(0, sim(j, i) - cover[j])`` and ``∘`` is ``*`` (``"multi"``) or ``+`` (``"add"``).
    Runs on the tensors' device without host synchronisation.
    """
    unit = F.normalize(features.float(), dim=-1)
    sim = unit @ unit.T
    n = sim.shape[0]
    weight = attention.float() ** alpha
    cover = torch.zeros(n, device=sim.device)
    picked = torch.zeros(n, dtype=torch.bool, device=sim.device)
    order = torch.empty(keep, dtype=torch.long, device=sim.device)
    first = weight
    for step in range(keep):
        gain = (sim - cover[:, None]).clamp(min=0).sum(0)
        score = gain * weight if combine == "multi" else gain + weight
        if step == 0:
            first = score
        best = score.masked_fill(picked, float("-inf")).argmax()
        picked[best] = True
        order[step] = best
        cover = torch.maximum(cover, sim[best])
    return torch.sort(order).values, first


@dataclass(frozen=True, kw_only=True)
class SCOPE(EncoderStageMethod):
    """Keep ``visual_token_num`` patches per image chosen by saliency-weighted coverage of CLIP features.

    Args:
        visual_token_num: tokens per image entering the LLM (official ``num_token``).
        alpha: exponent on the [CLS] attention (official environment variable ``ALPHA``, default 1).
        combine: ``"multi"`` (gain × attn^alpha, official default) or ``"add"`` (official ``COMBINED=add``).
        attention_layer: vision layer whose [CLS] attention, summed over heads, weights the gains (official -2).
        feature_layer: LLaVA's ``vision_feature_layer`` — the CLIP features whose cosine similarity defines
            coverage (official -2, the features LLaVA projects).
        batch_split: ``False`` (default): every image keeps ``visual_token_num``; ``True``: every image keeps
            ``int(visual_token_num / n)`` with ``n`` the images (LLaVA-NeXT: tiles) the tower encoded in the
            call, as the official forward does for batches (the same at batch 1 on LLaVA-1.5; the planned
            average then no longer describes batches).
    """

    alpha: float = 1.0
    combine: str = "multi"
    attention_layer: int = -2
    feature_layer: int = -2
    batch_split: bool = False

    name: ClassVar[str] = "scope"
    display_name: ClassVar[str] = "SCOPE"
    paper_name: ClassVar[str | None] = "SCOPE"
    table_order: ClassVar[int] = 80

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("combine", self.combine, COMBINES)
        check_float("alpha", self.alpha)
        check_int("attention_layer", self.attention_layer)
        check_choice("batch_split", self.batch_split, (True, False))
        feature_input_index(self.feature_layer)  # validates

    def cls_attention_layers(self) -> tuple[int, ...]:
        return (self.attention_layer,)

    def vision_layer_inputs(self) -> tuple[int, ...]:
        return (feature_input_index(self.feature_layer),)

    def select(self, ctx: StageContext) -> Selection:
        # The official code sums the [CLS] row over heads; the engine delivers the head mean.
        heads = ctx.adapter.vision_layers[self.attention_layer].self_attn.num_heads
        attention = ctx.cls_attention[self.attention_layer].float() * heads
        features = ctx.vision_inputs[feature_input_index(self.feature_layer)]
        kept, scores = [], []
        rows = len(attention)
        for g in ctx.groups:
            keep = g.keep
            if self.batch_split:
                keep = max(1, int((self.visual_token_num or g.keep) / rows))
            feats = patch_features(features[g.image_row])
            idx, first = scope_select(feats, attention[g.image_row], keep, self.alpha, self.combine)
            kept.append(idx)
            scores.append(first)
        return Selection(kept=kept, scores=scores)
