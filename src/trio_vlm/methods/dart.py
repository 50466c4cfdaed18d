"""DART (Wen et al., 2025): keep pivot tokens and the image tokens least duplicated by them.

Official rule (xqy1111111/DART ``llava/model/language_model/modeling_llama_self.py``, class ``DART``): before
layer K, rank tokens by the L1 norm of layer K-1's post-RoPE keys; the top 4 image tokens and the top 4 tokens
after the image are pivots; visiting the pivots in (CPython) set order over their sequence indices, each takes
the ``TOKEN_TOPK`` remaining image tokens least cosine-similar to it, on layer K-1's output after the final norm.
Kept: the image pivots and everything taken; original position ids. ``TOKEN_TOPK = budget // 8``, so
196/132/68 tokens are kept for 192/128/64; we keep the budget exactly by default (``exact_budget``) by giving the
first ``(budget - 4) % 8`` pivots one more pick than the rest. The official norms and cosine similarities are
computed on model-dtype tensors: ``score_dtype="model"`` (default) does the same, ``"float32"`` upcasts first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from trio_vlm.contract import Group, Selection, Stage, StageContext
from trio_vlm.methods.base import LLMStages, check_choice, check_int
from trio_vlm.methods.fastv import single_drop_config
from trio_vlm.methods.llm_attention import SCORE_DTYPES, rotary_keys, score_dtype_of, text_after_image

#: DART's K on LLaVA-1.5 (the paper's default).
DART_LAYER = 2


def pivot_quotas(n_picks: int, n_pivots: int, per_pivot: int | None) -> list[int]:
    """Picks per pivot in visiting order: ``per_pivot`` each (official), or ``n_picks`` spread evenly with the
    remainder going to the first pivots (exact budget)."""
    if n_pivots == 0:
        return []
    if per_pivot is not None:
        return [per_pivot] * n_pivots
    base, extra = divmod(max(n_picks, 0), n_pivots)
    return [base + (i < extra) for i in range(n_pivots)]


@dataclass(frozen=True, kw_only=True)
class DART(LLMStages):
    """Duplication-aware selection around key-norm pivots, once before layer K.

    Args:
        layer_list: layers run before each drop (official: one drop, ``[K]`` with K = 2).
        image_token_list: image tokens kept by each drop.
        pivot_image, pivot_text: pivots among the image tokens / the tokens after the image (official 4 + 4).
        exact_budget: keep exactly the scheduled count (default); ``False`` reproduces the official
            ``TOKEN_TOPK = count // (pivot_image + pivot_text)`` picks per pivot (e.g. 196 kept for 192).
        position_mode: ``"original"`` (official), ``"compact"`` or ``None``.
        score_dtype: ``"model"`` (official: key norms and similarities in the model's dtype) or ``"float32"``.
    """

    layer_list: tuple[int, ...] = (DART_LAYER,)
    image_token_list: tuple[int, ...] = (192,)
    pivot_image: int = 4
    pivot_text: int = 4
    exact_budget: bool = True
    position_mode: str | None = "original"
    score_dtype: str = "model"

    name: ClassVar[str] = "dart"
    display_name: ClassVar[str] = "DART"
    paper_name: ClassVar[str | None] = "DART"
    table_order: ClassVar[int] = 40

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("pivot_image", self.pivot_image, low=1)
        check_int("pivot_text", self.pivot_text, low=0)
        check_choice("exact_budget", self.exact_budget, (True, False))
        check_choice("score_dtype", self.score_dtype, SCORE_DTYPES)

    @classmethod
    def reference_config(cls, family: str, budget: int, mode: str | None) -> dict[str, Any]:
        """K=2 and the keep count whose average is closest to ``budget``, as FastV (LLaVA-1.5: 166/98/30 kept
        for 192/128/64). DART's own scripts name the tokens kept after layer 2 instead (``--image-token-list
        '[64]'`` reproduces that: a 100-token average)."""
        return single_drop_config(family, budget, DART_LAYER)

    def stage_output(self, stage: Stage, keep: int, available: int) -> int:
        """``keep`` with the exact budget; else the official ``pivot_image + pivots · (keep // pivots)`` (when
        ``pivot_text`` text tokens follow the image)."""
        if self.exact_budget:
            return keep
        pivots = self.pivot_image + self.pivot_text
        return min(available, min(self.pivot_image, keep) + pivots * (keep // pivots))

    def select(self, ctx: StageContext) -> Selection:
        if ctx.previous_hidden is None or ctx.previous_kwargs is None:
            raise RuntimeError(
                "DART needs the input of the layer before the drop (an LLM stage after layer >= 1)"
            )
        key_norm = rotary_keys(ctx.adapter, ctx.layer_index - 1, ctx.previous_hidden, ctx.previous_kwargs)
        dtype = score_dtype_of(self.score_dtype, ctx.hidden)
        key_norm = key_norm.to(dtype).norm(p=1, dim=-1)  # (B, S) L1 norm over heads and channels
        normed = ctx.adapter.final_norm(ctx.hidden).to(dtype)
        first_real = ctx.padding.int().argmax(1)
        kept, scores = [], []
        for g in ctx.groups:
            same = [h.seq_index for h in ctx.groups if h.sample == g.sample]
            text = text_after_image(same, g.seq_index, ctx.padding[g.sample])
            kept.append(
                self._select_group(g, text, key_norm[g.sample], normed[g.sample], int(first_real[g.sample]))
            )
            scores.append(key_norm[g.sample, g.seq_index])
        return Selection(kept=kept, scores=scores)

    def _select_group(
        self, g: Group, text: torch.Tensor, key_norm: torch.Tensor, normed: torch.Tensor, offset: int
    ) -> torch.Tensor:
        image_norm = key_norm[g.seq_index]
        n_image_pivots = min(self.pivot_image, g.keep)
        image_pivots = image_norm.topk(n_image_pivots).indices  # local indices
        text_pivots = text[key_norm[text].topk(min(self.pivot_text, text.numel())).indices]
        # Pivots by sequence index of the sample's unpadded prompt, visited in Python set order as officially.
        pivot_seq = [int(p) - offset for p in g.seq_index[image_pivots]] + [
            int(p) - offset for p in text_pivots
        ]
        order = list(set(pivot_seq))
        per_pivot = None if self.exact_budget else g.keep // (self.pivot_image + self.pivot_text)
        quotas = pivot_quotas(g.keep - n_image_pivots, len(order), per_pivot)
        free = torch.ones(g.size, dtype=torch.bool, device=image_norm.device)
        free[image_pivots] = False
        image_feats = normed[g.seq_index]
        taken = [image_pivots]
        for seq_index, quota in zip(order, quotas):
            pool = free.nonzero().flatten()
            n = min(quota, int(pool.numel()))
            if n == 0:
                continue
            sim = F.cosine_similarity(normed[seq_index + offset][None], image_feats[pool], dim=-1)
            picks = pool[(-sim).topk(n).indices]
            free[picks] = False
            taken.append(picks)
        return torch.sort(torch.cat(taken)).values
