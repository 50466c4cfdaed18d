"""PyramidDrop (Xing et al., 2024): rank image tokens at each stage boundary by the last instruction token.

Official rule (Cooperx521/PyramidDrop ``llava/model/modeling_llama_pdrop.py::pdrop_rank_drop``): after layer
``L`` of ``layer_list``, recompute the *next* layer's (index ``L``) query of the last instruction token and the
keys of all tokens (input norm, q/k projections, RoPE at the current positions), softmax that one row under the
causal mask, average over heads, keep the top image tokens; positions are renumbered 0..n-1 (decode shifted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from trio_vlm.methods.base import Selection, StageContext, TokenMethod
from trio_vlm.methods.baseline_presets import check_llm_mode, check_positions, family_shape, no_encoder_stage
from trio_vlm.methods.llm_attention import head_mean_attention
from trio_vlm.methods.nms import topk_select
from trio_vlm.schedule import Schedule

# (family, budget) -> (layer_list, image_token_list): SparseVLM's LLaVA-1.5 schedules as later papers reuse
# them for PDrop; averages over 32 layers: 191.0, 126.25, 62.125.
PRESETS: dict[tuple[str, int], tuple[tuple[int, ...], tuple[int, ...]]] = {
    ("llava-1.5", 192): ((2, 6, 16), (300, 200, 110)),
    ("llava-1.5", 128): ((2, 6, 16), (303, 110, 36)),
    ("llava-1.5", 64): ((2, 6, 16), (66, 30, 17)),
}


@dataclass
class PDrop(TokenMethod):
    """Last-instruction-token → image attention of the next layer, mean over heads; top-k at every stage.

    Args:
        layer_list: layers run before each drop (official scripts: ``[8, 16, 24]``).
        image_token_list: image tokens kept by each drop (official: 576 × ``[0.5, 0.25, 0.125]``).
        visual_token_num: must be ``None`` (no encoder stage).
        positions: ``"compact"`` (official renumbering), ``"original"`` or ``None``.
    """

    layer_list: tuple[int, ...] = (8, 16, 24)
    image_token_list: tuple[int, ...] = (288, 144, 72)
    visual_token_num: int | None = None
    positions: str | None = "compact"

    name: ClassVar[str] = "pdrop"

    def __post_init__(self) -> None:
        no_encoder_stage("PDrop", self.visual_token_num)
        check_positions(self.positions)
        self._schedule = Schedule(self.layer_list, self.image_token_list, None)
        self.layer_list, self.image_token_list = self._schedule.layer_list, self._schedule.image_token_list

    @classmethod
    def preset(cls, family: str, budget: int, mode: str | None = None, **overrides) -> PDrop:
        """The 192/128/64 schedules (layers [2, 6, 16], SparseVLM's counts) for ``family``."""
        check_llm_mode("PDrop", mode)
        family_shape("PDrop", family)
        key = (family, budget)
        if key not in PRESETS:
            raise ValueError(
                f"no PDrop preset for {family!r} budget={budget}; known budgets: {[b for _, b in PRESETS]}"
            )
        layers, counts = PRESETS[key]
        return cls(layer_list=layers, image_token_list=counts, **overrides)

    def select(self, ctx: StageContext) -> Selection:
        rows = ctx.last_valid[:, None]
        attn = head_mean_attention(
            ctx.adapter, ctx.layer_index, ctx.hidden, ctx.layer_kwargs, rows, ctx.padding
        )[:, 0]
        scores = [attn[g.sample, g.positions] for g in ctx.groups]
        return Selection(kept=[topk_select(s, g.keep) for s, g in zip(scores, ctx.groups)], scores=scores)
