"""TRIO: Token Reduction via Inference-Objective guidance (arXiv 2602.04657)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from trio_vlm.methods.base import Selection, StageContext, TokenMethod
from trio_vlm.methods.nms import nms_select, nms_select_loop, topk_select
from trio_vlm.methods.probe import fast_saliency, reference_saliency
from trio_vlm.methods.window_global import merge_into_nearest, window_global_select
from trio_vlm.schedule import Schedule

# (family, budget, mode) -> (visual_token_num, layer_list, image_token_list)
PRESETS: dict[tuple[str, int, str], tuple[int | None, tuple[int, ...], tuple[int, ...]]] = {
    # Reference scripts (ocy1/TRIO llava/model/scripts/v1_5/eval/*.sh and README).
    ("llava-1.5", 64, "wo_ve"): (None, (1, 10, 15), (92, 54, 22)),
    ("llava-1.5", 128, "wo_ve"): (None, (1, 10, 15), (218, 128, 54)),
    ("llava-1.5", 64, "w_ve"): (96, (16,), (32,)),
    # Our choices where the scripts are silent: same layers, counts giving an exact 32-layer average.
    ("llava-1.5", 192, "wo_ve"): (None, (1, 10, 15), (344, 202, 86)),
    ("llava-1.5", 128, "w_ve"): (192, (16,), (64,)),
    ("llava-1.5", 192, "w_ve"): (288, (16,), (96,)),
}


@dataclass
class TRIO(TokenMethod):
    """Gradient saliency of a layer-local proxy loss + feature-space NMS; optional [CLS]-attention encoder stage.

    Args:
        layer_list: 1-based counts of decoder layers run before each LLM drop.
        image_token_list: visual tokens per image kept at each LLM drop.
        visual_token_num: tokens per image kept by the encoder stage (``None``: no encoder stage).
        k_positions: prompt positions in the proxy loss (reference 4).
        include_last: include the last prompt position in the loss (reference excludes it).
        tau: cosine-similarity suppression threshold of the NMS (reference 0.8).
        use_nms: ``False`` for plain top-k by saliency (ablation).
        probe: ``"fast"`` (K/V for all tokens, layer + LM head for K rows) or ``"reference"`` (full layer and
            full-vocabulary logits for every position); both give the same saliency.
        nms: ``"device"`` (vectorised, no per-token host sync) or ``"loop"`` (the reference host loop).
        shallow_layer, deep_layer: vision layers whose [CLS] attention drives the encoder stage (5, -2).
        window: window side on the patch grid for the encoder stage's local half (6 → 16 windows on 24×24).
        local_ratio: share of the encoder budget picked window-locally (0.5).
        merge: merge dropped encoder-stage tokens into their nearest kept token (reference True).
        positions: ``None`` (family reference), ``"compact"`` or ``"original"``.
    """

    layer_list: tuple[int, ...] = (1, 10, 15)
    image_token_list: tuple[int, ...] = (92, 54, 22)
    visual_token_num: int | None = None
    k_positions: int = 4
    include_last: bool = False
    tau: float = 0.8
    use_nms: bool = True
    probe: str = "fast"
    nms: str = "device"
    shallow_layer: int = 5
    deep_layer: int = -2
    window: int = 6
    local_ratio: float = 0.5
    merge: bool = True
    positions: str | None = None

    name: ClassVar[str] = "trio"

    def __post_init__(self) -> None:
        self._schedule = Schedule(self.layer_list, self.image_token_list, self.visual_token_num)
        self.layer_list, self.image_token_list = self._schedule.layer_list, self._schedule.image_token_list
        if self.probe not in ("fast", "reference"):
            raise ValueError(f"probe must be 'fast' or 'reference', got {self.probe!r}")
        if self.nms not in ("device", "loop"):
            raise ValueError(f"nms must be 'device' or 'loop', got {self.nms!r}")
        if self.k_positions < 1:
            raise ValueError(f"k_positions must be >= 1, got {self.k_positions}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must lie in (0, 1], got {self.tau}")
        if self.positions not in (None, "compact", "original"):
            raise ValueError(f"positions must be None, 'compact' or 'original', got {self.positions!r}")

    @classmethod
    def preset(cls, family: str, budget: int, mode: str = "wo_ve", **overrides) -> TRIO:
        """The reference schedule for ``family`` at an average of ``budget`` visual tokens per layer.

        ``mode``: ``"wo_ve"`` (LLM stages only) or ``"w_ve"`` (encoder stage + LLM stage).
        """
        key = (family, int(budget), mode)
        if key not in PRESETS:
            known = sorted({f"{f} budget={b} mode={m}" for f, b, m in PRESETS})
            raise ValueError(f"no TRIO preset for {family!r} budget={budget} mode={mode!r}; known: {known}")
        vtn, layers, counts = PRESETS[key]
        return cls(layer_list=layers, image_token_list=counts, visual_token_num=vtn, **overrides)

    # ---- TokenMethod ---------------------------------------------------------------------------------
    def schedule(self) -> Schedule:
        return self._schedule

    @property
    def position_mode(self) -> str | None:
        return self.positions

    def cls_attention_layers(self) -> tuple[int, ...]:
        return (self.shallow_layer, self.deep_layer) if self.visual_token_num is not None else ()

    def select(self, ctx: StageContext) -> Selection:
        if ctx.stage == "encoder":
            return self._select_encoder(ctx)
        return self._select_llm(ctx)

    def saliency(self, ctx: StageContext) -> torch.Tensor:
        """(B, S) probe saliency at an LLM stage."""
        if self.probe == "reference":
            return reference_saliency(
                ctx.adapter,
                ctx.layer_index,
                ctx.hidden,
                ctx.layer_kwargs,
                ctx.last_valid,
                self.k_positions,
                self.include_last,
            )
        return fast_saliency(
            ctx.adapter,
            ctx.layer_index,
            ctx.hidden,
            ctx.layer_kwargs,
            ctx.last_valid,
            ctx.padding,
            self.k_positions,
            self.include_last,
        )

    def _select_llm(self, ctx: StageContext) -> Selection:
        saliency = self.saliency(ctx)
        kept, scores = [], []
        for g in ctx.groups:
            s = saliency[g.sample, g.positions]
            if not self.use_nms:
                kept.append(topk_select(s, g.keep))
            else:
                feats = ctx.hidden[g.sample, g.positions]
                select = nms_select if self.nms == "device" else nms_select_loop
                kept.append(select(s, feats, g.keep, self.tau))
            scores.append(s)
        return Selection(kept=kept, scores=scores)

    def _select_encoder(self, ctx: StageContext) -> Selection:
        shallow = ctx.cls_attention[self.shallow_layer]
        deep = ctx.cls_attention[self.deep_layer]
        kept, scores, replacement = [], [], []
        for g in ctx.groups:
            idx = window_global_select(
                shallow[g.image_row], deep[g.image_row], g.keep, self.window, self.local_ratio
            )
            kept.append(idx)
            scores.append(deep[g.image_row].float())
            feats = ctx.hidden[g.sample, g.positions]
            replacement.append(merge_into_nearest(feats, idx) if self.merge else None)
        return Selection(kept=kept, scores=scores, replacement=replacement)
