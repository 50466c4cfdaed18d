"""FastV (Chen et al., 2024): drop the image tokens the last prompt token attends to least, once, inside the LLM.

Official rule (pkunlp-icler/FastV ``src/FastV/llava-hf/.../modeling_llama.py::fastv_forward``): after layer K
has been reached, take layer K-1's attention probabilities, average over heads, read the last token's row over
the image tokens and keep the top ones; the kept tokens keep their original position ids. The official
attention probabilities are model-dtype tensors (eager ``softmax(dtype=float32).to(query dtype)``), averaged
over heads in that dtype before ``topk``: ``score_dtype="model"`` (default) ranks the same rounded values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from trio_vlm import presets
from trio_vlm.contract import Selection, StageContext
from trio_vlm.methods.base import LLMStages, check_choice
from trio_vlm.methods.llm_attention import SCORE_DTYPES, head_mean_attention, score_dtype_of
from trio_vlm.methods.nms import topk_select

#: FastV's K on LLaVA-1.5 in our presets (the paper's default).
FASTV_LAYER = 2


def single_drop_keep(budget: int, layer: int, num_layers: int, num_visual: int) -> int:
    """Tokens one drop after ``layer`` layers must keep so the ``num_layers``-layer average is ``budget``
    (rounded to the nearest integer; ``NoPreset`` when no count in 1..num_visual gets there)."""
    keep = round((num_layers * budget - layer * num_visual) / (num_layers - layer))
    if not 1 <= keep <= num_visual:
        raise presets.NoPreset(
            f"an average of {budget} visual tokens is out of reach with one drop after layer {layer} "
            f"({num_layers} layers, {num_visual} tokens)"
        )
    return keep


def single_drop_config(family: str, budget: int, layer: int) -> dict[str, Any]:
    """One drop after ``layer`` layers on ``family``'s reference model, averaging ``budget`` tokens."""
    if family != presets.DEFAULT_FAMILY:
        raise presets.NoPreset(f"no published single-drop schedule for {family}")
    shape = presets.REFERENCE_SHAPES[family]
    keep = single_drop_keep(budget, layer, shape.num_layers, shape.visual)
    return {"layer_list": (layer,), "image_token_list": (keep,)}


@dataclass(frozen=True, kw_only=True)
class FastV(LLMStages):
    """Last-token → image attention of the layer before each drop, mean over heads; top-k; no merging.

    Args:
        layer_list: layers run before each drop (official: one drop, ``[K]``).
        image_token_list: image tokens kept by each drop (or ``image_token_ratio_list``: fractions).
        position_mode: ``"original"`` (official: kept tokens keep their position ids), ``"compact"`` or ``None``.
        score_dtype: ``"model"`` (official: attention rounded to the model's dtype before ranking) or
            ``"float32"``.
    """

    layer_list: tuple[int, ...] = (FASTV_LAYER,)
    image_token_list: tuple[int, ...] = (166,)
    position_mode: str | None = "original"
    score_dtype: str = "model"

    name: ClassVar[str] = "fastv"
    display_name: ClassVar[str] = "FastV"
    paper_name: ClassVar[str | None] = "FastV"
    table_order: ClassVar[int] = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("score_dtype", self.score_dtype, SCORE_DTYPES)

    @classmethod
    def reference_config(cls, family: str, budget: int, mode: str | None) -> dict[str, Any]:
        """K=2 and the keep count whose average is closest to ``budget`` (LLaVA-1.5: 192→166, 128→98, 64→30
        kept after layer 2, i.e. averages 191.625, 127.875, 64.125)."""
        return single_drop_config(family, budget, FASTV_LAYER)

    def select(self, ctx: StageContext) -> Selection:
        if ctx.previous_hidden is None or ctx.previous_kwargs is None:
            raise RuntimeError(
                "FastV needs the input of the layer before the drop (an LLM stage after layer >= 1)"
            )
        rows = ctx.last_valid[:, None]
        attn = head_mean_attention(
            ctx.adapter,
            ctx.layer_index - 1,
            ctx.previous_hidden,
            ctx.previous_kwargs,
            rows,
            ctx.padding,
            score_dtype_of(self.score_dtype, ctx.hidden),
        )[:, 0]
        scores = [attn[g.sample, g.seq_index] for g in ctx.groups]
        return Selection(kept=[topk_select(s, g.keep) for s, g in zip(scores, ctx.groups)], scores=scores)
