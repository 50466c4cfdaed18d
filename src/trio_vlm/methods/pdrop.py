"""PyramidDrop (Xing et al., 2024): rank image tokens at each stage boundary by the last instruction token.

Official rule (Cooperx521/PyramidDrop ``llava/model/modeling_llama_pdrop.py::pdrop_rank_drop``): after layer
``L`` of ``layer_list``, recompute the *next* layer's (index ``L``) query of the last instruction token and the
keys of all tokens (input norm, q/k projections, RoPE at the current positions), softmax that one row under the
causal mask, average over heads, keep the top image tokens; positions are renumbered 0..n-1 (decode shifted).
The official row is a model-dtype tensor (``softmax(dtype=float32).to(query dtype)``), averaged over heads in
that dtype: ``score_dtype="model"`` (default) ranks the same rounded values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from trio_vlm import presets
from trio_vlm.contract import Selection, StageContext
from trio_vlm.methods.base import LLMStages, check_choice
from trio_vlm.methods.llm_attention import SCORE_DTYPES, head_mean_attention, score_dtype_of
from trio_vlm.methods.nms import topk_select

# (family, budget, mode) -> schedule: SparseVLM's LLaVA-1.5 schedules as later papers reuse them for PDrop;
# averages over 32 layers: 191.0, 126.25, 62.125.
PUBLISHED: dict[tuple[str, int, str | None], dict[str, Any]] = {
    ("llava-1.5", 192, "wo_ve"): {"layer_list": (2, 6, 16), "image_token_list": (300, 200, 110)},
    ("llava-1.5", 128, "wo_ve"): {"layer_list": (2, 6, 16), "image_token_list": (303, 110, 36)},
    ("llava-1.5", 64, "wo_ve"): {"layer_list": (2, 6, 16), "image_token_list": (66, 30, 17)},
}


@dataclass(frozen=True, kw_only=True)
class PDrop(LLMStages):
    """Last-instruction-token → image attention of the next layer, mean over heads; top-k at every stage.

    Args:
        layer_list: layers run before each drop (official scripts: ``[8, 16, 24]``).
        image_token_list: image tokens kept by each drop (official: 576 × ``[0.5, 0.25, 0.125]``).
        position_mode: ``"compact"`` (official renumbering), ``"original"`` or ``None``.
        score_dtype: ``"model"`` (official: attention rounded to the model's dtype before ranking) or
            ``"float32"``.
    """

    layer_list: tuple[int, ...] = (8, 16, 24)
    image_token_list: tuple[int, ...] = (288, 144, 72)
    position_mode: str | None = "compact"
    score_dtype: str = "model"

    name: ClassVar[str] = "pdrop"
    display_name: ClassVar[str] = "PDrop"
    paper_name: ClassVar[str | None] = "PDrop"
    table_order: ClassVar[int] = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("score_dtype", self.score_dtype, SCORE_DTYPES)

    @classmethod
    def reference_config(cls, family: str, budget: int, mode: str | None) -> dict[str, Any]:
        """Layers [2, 6, 16] with SparseVLM's counts at 192/128/64 (other budgets: the nearest, fitted)."""
        return presets.published_schedule(cls, PUBLISHED, family, budget, mode)

    def select(self, ctx: StageContext) -> Selection:
        rows = ctx.last_valid[:, None]
        attn = head_mean_attention(
            ctx.adapter,
            ctx.layer_index,
            ctx.hidden,
            ctx.layer_kwargs,
            rows,
            ctx.padding,
            score_dtype_of(self.score_dtype, ctx.hidden),
        )[:, 0]
        scores = [attn[g.sample, g.seq_index] for g in ctx.groups]
        return Selection(kept=[topk_select(s, g.keep) for s, g in zip(scores, ctx.groups)], scores=scores)
