"""VisionZip (Yang et al., CVPR 2025): dominant tokens by [CLS] attention + merged contextual tokens.

Official code: dvlab-research/VisionZip ``visionzip/clip_encoder.py`` (``CLIPVisionTower_VisionZip.forward``),
``visionzip/utils.py`` (``CLIPAttention_forward``: head-averaged keys of layer -2 as the merge metric),
``visionzip/main.py::visionzip`` (``dominant - 1`` patches besides [CLS]), ``visionzip/llava_arch.py``
(``encode_images_visionzip``: the projector on ``[CLS], dominant patches, contextual tokens``). The dominant
tokens are [CLS] and the top ``dominant - 1`` patches by the [CLS] row of layer -2; the contextual tokens are
merged from the remaining patches. Options and deviations: docs/baselines_encoder.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from trio_vlm.contract import Selection, StageContext
from trio_vlm.methods.base import check_choice, check_int
from trio_vlm.methods.clip_features import feature_input_index, head_mean_keys, patch_features, project_to_llm
from trio_vlm.methods.encoder_stage import EncoderStageMethod
from trio_vlm.methods.nms import topk_select

#: Sequence orders: ``[CLS]``, dominant patches ascending, contextual tokens (official), or raster order.
ORDERS = ("official", "raster")


def default_contextual(total: int) -> int:
    """Contextual tokens for ``total`` kept: 5/32 of it, rounded half up.

    Reproduces every official setting: 192→30, 128→20, 64→10 (LLaVA-1.5); 640→100, 320→50, 160→25 (NeXT).
    """
    return (total * 5 + 16) // 32


def contextual_merge(
    keys: torch.Tensor, features: torch.Tensor, n_targets: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """VisionZip's contextual tokens over the non-dominant tokens (given in ascending original order).

    Targets are every ``max(1, n // n_targets)``-th token (the first ``n_targets``); every other token joins
    the target whose key is most cosine-similar; a contextual token is ``target + mean(assigned)`` (the
    target itself when nothing joins it). Returns (local target indices, (n_targets, D) merged features).
    """
    n = keys.shape[0]
    step = max(1, n // n_targets)
    targets = torch.arange(0, n, step, device=keys.device)[:n_targets]
    is_target = torch.zeros(n, dtype=torch.bool, device=keys.device)
    is_target[targets] = True
    unit = F.normalize(keys.float(), dim=-1)
    assign = (unit[~is_target] @ unit[targets].T).argmax(dim=1)
    feats = features.float()
    sums = torch.zeros(n_targets, feats.shape[1], device=feats.device).index_add_(
        0, assign, feats[~is_target]
    )
    counts = torch.zeros(n_targets, device=feats.device).index_add_(
        0, assign, torch.ones_like(assign).float()
    )
    return targets, feats[targets] + sums / counts.clamp(min=1)[:, None]


@dataclass(frozen=True, kw_only=True)
class VisionZip(EncoderStageMethod):
    """Keep ``visual_token_num`` tokens per image: [CLS] and ``visual_token_num - contextual - 1`` dominant
    patches by [CLS]→patch attention of vision layer ``attention_layer``, plus ``contextual`` merged tokens.

    Args:
        visual_token_num: tokens per image entering the LLM (dominant incl. [CLS] + contextual).
        contextual: merged contextual tokens; ``None`` → 5/32 of ``visual_token_num`` (the official ratio).
        attention_layer: vision layer whose [CLS] attention ranks patches and whose head-averaged keys are
            the merge metric (official: -2).
        feature_layer: LLaVA's ``vision_feature_layer`` (hidden-state index) — the CLIP features that are
            merged before the projector (official: -2).
        cls_token: ``True`` (official): the projected [CLS] feature of ``feature_layer`` is one of the dominant
            tokens; ``False``: one more patch instead (HF LLaVA's "default" feature selection drops [CLS]).
            An image keeping a single token keeps a patch either way.
        order: ``"official"``: [CLS], dominant patches ascending, then the contextual tokens; ``"raster"``:
            [CLS] first, then dominant patches and contextual tokens (at their target patch) in raster order.
        merge: ``False`` keeps the contextual target tokens unmerged (ablation).
    """

    contextual: int | None = None
    attention_layer: int = -2
    feature_layer: int = -2
    cls_token: bool = True
    order: str = "official"
    merge: bool = True

    name: ClassVar[str] = "visionzip"
    display_name: ClassVar[str] = "VisionZip"
    paper_name: ClassVar[str | None] = "VisionZip"
    table_order: ClassVar[int] = 60

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.contextual is not None:
            check_int("contextual", self.contextual, low=0, high=self.visual_token_num)
        check_int("attention_layer", self.attention_layer)
        check_choice("cls_token", self.cls_token, (True, False))
        check_choice("order", self.order, ORDERS)
        check_choice("merge", self.merge, (True, False))
        feature_input_index(self.feature_layer)  # validates

    def keeps_cls(self, keep: int) -> bool:
        """Whether [CLS] is one of the ``keep`` tokens (an image needs at least one kept patch)."""
        return self.cls_token and keep >= 2

    def contextual_count(self, keep: int) -> int:
        """Contextual tokens when ``keep`` tokens survive."""
        room = keep - int(self.keeps_cls(keep))
        return min(room, default_contextual(keep) if self.contextual is None else self.contextual)

    def cls_attention_layers(self) -> tuple[int, ...]:
        return (self.attention_layer,)

    def vision_layer_inputs(self) -> tuple[int, ...]:
        return (self.attention_layer, feature_input_index(self.feature_layer))

    def select(self, ctx: StageContext) -> Selection:
        attention = ctx.cls_attention[self.attention_layer]
        layer = ctx.adapter.vision_layers[self.attention_layer]
        features = ctx.vision_inputs[feature_input_index(self.feature_layer)]
        out = Selection(kept=[], scores=[], replacement=[], order=[], prepended=[])
        for g in ctx.groups:
            attn = attention[g.image_row].float()
            with_cls = self.keeps_cls(g.keep)
            n_ctx = self.contextual_count(g.keep)
            dominant = topk_select(attn, g.keep - n_ctx - int(with_cls))
            cls_row = features[g.image_row][:1] if with_cls else None
            out.prepended.append(None if cls_row is None else self._project(ctx, cls_row))
            out.scores.append(attn)
            if n_ctx == 0:
                out.kept.append(dominant)
                out.replacement.append(None)
                out.order.append(None)
                continue
            rest_mask = torch.ones(g.size, dtype=torch.bool, device=attn.device)
            rest_mask[dominant] = False
            rest = rest_mask.nonzero().flatten()
            keys = head_mean_keys(
                layer, ctx.vision_inputs[self.attention_layer][g.image_row : g.image_row + 1]
            )
            feats = patch_features(features[g.image_row])
            targets, merged = contextual_merge(patch_features(keys[0])[rest], feats[rest], n_ctx)
            targets = rest[targets]
            kept = torch.sort(torch.cat([dominant, targets])).values
            out.kept.append(kept)
            # official order: the dominant patches (ascending), then the contextual tokens (target order)
            out.order.append(
                torch.cat([torch.searchsorted(kept, dominant), torch.searchsorted(kept, targets)])
                if self.order == "official"
                else None
            )
            if not self.merge:
                out.replacement.append(None)
                continue
            current = ctx.hidden[g.sample, g.seq_index[kept]].clone()
            current[torch.searchsorted(kept, targets)] = self._project(ctx, merged).to(current.dtype)
            out.replacement.append(current)
        return out

    @staticmethod
    def _project(ctx: StageContext, clip_rows: torch.Tensor) -> torch.Tensor:
        return project_to_llm(ctx.adapter, clip_rows).to(ctx.hidden.dtype)
