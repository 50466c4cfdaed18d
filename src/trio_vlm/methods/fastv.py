"""FastV (Chen et al., 2024): drop the image tokens the last prompt token attends to least, once, inside the LLM.

Official rule (pkunlp-icler/FastV ``src/FastV/llava-hf/.../modeling_llama.py::fastv_forward``): after layer K
has been reached, take layer K-1's attention probabilities, average over heads, read the last token's row over
the image tokens and keep the top ones; the kept tokens keep their original position ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from trio_vlm.methods.base import Selection, StageContext, TokenMethod
from trio_vlm.methods.baseline_presets import (
    check_budget,
    check_llm_mode,
    check_positions,
    family_shape,
    no_encoder_stage,
    single_drop_keep,
)
from trio_vlm.methods.llm_attention import head_mean_attention
from trio_vlm.methods.nms import topk_select
from trio_vlm.schedule import Schedule

#: FastV's K on LLaVA-1.5 in our presets (the paper's default).
FASTV_LAYER = 2


@dataclass
class FastV(TokenMethod):
    """Last-token → image attention of the layer before each drop, mean over heads; top-k; no merging.

    Args:
        layer_list: layers run before each drop (official: one drop, ``[K]``).
        image_token_list: image tokens kept by each drop.
        visual_token_num: must be ``None`` (no encoder stage).
        positions: ``"original"`` (official: kept tokens keep their position ids), ``"compact"`` or ``None``.
    """

    layer_list: tuple[int, ...] = (FASTV_LAYER,)
    image_token_list: tuple[int, ...] = (166,)
    visual_token_num: int | None = None
    positions: str | None = "original"

    name: ClassVar[str] = "fastv"

    def __post_init__(self) -> None:
        no_encoder_stage("FastV", self.visual_token_num)
        check_positions(self.positions)
        self._schedule = Schedule(self.layer_list, self.image_token_list, None)
        self.layer_list, self.image_token_list = self._schedule.layer_list, self._schedule.image_token_list

    @classmethod
    def preset(cls, family: str, budget: int, mode: str | None = None, **overrides) -> FastV:
        """K=2 and the keep count whose ``family``-depth average is closest to ``budget`` (LLaVA-1.5: 192→166,
        128→98, 64→30 kept after layer 2, i.e. averages 191.625, 127.875, 64.125)."""
        check_llm_mode("FastV", mode)
        layers, visual = family_shape("FastV", family)
        keep = single_drop_keep(check_budget("FastV", budget, visual), FASTV_LAYER, layers, visual)
        return cls(layer_list=(FASTV_LAYER,), image_token_list=(keep,), **overrides)

    def select(self, ctx: StageContext) -> Selection:
        if ctx.previous_hidden is None or ctx.previous_kwargs is None:
            raise RuntimeError(
                "FastV needs the input of the layer before the drop (an LLM stage after layer >= 1)"
            )
        rows = ctx.last_valid[:, None]
        attn = head_mean_attention(
            ctx.adapter, ctx.layer_index - 1, ctx.previous_hidden, ctx.previous_kwargs, rows, ctx.padding
        )[:, 0]
        scores = [attn[g.sample, g.positions] for g in ctx.groups]
        return Selection(kept=[topk_select(s, g.keep) for s, g in zip(scores, ctx.groups)], scores=scores)
