"""TRIO: Token Reduction via Inference-Objective guidance (arXiv 2602.04657)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from trio_vlm import presets
from trio_vlm.contract import Group, Selection, Stage, StageContext
from trio_vlm.methods import trio_reference
from trio_vlm.methods.base import TokenMethod, check_choice, check_float, check_int
from trio_vlm.methods.nms import nms_select_batched, nms_select_loop, topk_select
from trio_vlm.methods.probe import fast_saliency, reference_saliency
from trio_vlm.methods.window_global import merge_into_nearest, window_global_select
from trio_vlm.methods.window_grid import RULES, grid_window_global_select

#: probe_compile values: off, auto, or a torch.compile backend.
PROBE_COMPILE = ("off", "auto", "inductor", "aot_eager", "eager", "cudagraphs")

# (family, budget, mode) -> schedule fields on the family's reference model (trio_vlm.presets.REFERENCE_SHAPES).
PUBLISHED: dict[tuple[str, int, str], dict[str, Any]] = {
    # Reference scripts (ocy1/TRIO llava/model/scripts/v1_5/eval/*.sh and README).
    ("llava-1.5", 64, "wo_ve"): {"layer_list": (1, 10, 15), "image_token_list": (92, 54, 22)},
    ("llava-1.5", 128, "wo_ve"): {"layer_list": (1, 10, 15), "image_token_list": (218, 128, 54)},
    ("llava-1.5", 64, "w_ve"): {"visual_token_num": 96, "layer_list": (16,), "image_token_list": (32,)},
    # Our choices where the scripts are silent: same layers, counts giving an exact 32-layer average.
    ("llava-1.5", 192, "wo_ve"): {"layer_list": (1, 10, 15), "image_token_list": (344, 202, 86)},
    ("llava-1.5", 128, "w_ve"): {"visual_token_num": 192, "layer_list": (16,), "image_token_list": (64,)},
    ("llava-1.5", 192, "w_ve"): {"visual_token_num": 288, "layer_list": (16,), "image_token_list": (96,)},
    # Families with a variable number of visual tokens per image: fractions instead of counts. A budget B
    # means the LLaVA-1.5-equivalent share B/576 of the visual tokens on average over the layers (64 → 11.1%).
    # Reference: Qwen2.5-VL-7B w/ VE 64 (TRIO.md §6). Our choices: the other Qwen2.5-VL budgets keep its shape
    # (encoder share 1.5·B/576, one third of it after half the layers); LLaVA-NeXT (32 layers) uses
    # LLaVA-1.5's layers with its counts turned into fractions of the tokens each stage receives.
    ("qwen2.5-vl", 64, "w_ve"): {
        "image_token_ratio": 0.167,
        "layer_list": (14,),
        "image_token_ratio_list": (0.333,),
    },
    ("qwen2.5-vl", 128, "w_ve"): {
        "image_token_ratio": 0.333,
        "layer_list": (14,),
        "image_token_ratio_list": (0.333,),
    },
    ("qwen2.5-vl", 192, "w_ve"): {
        "image_token_ratio": 0.5,
        "layer_list": (14,),
        "image_token_ratio_list": (0.333,),
    },
    ("qwen2.5-vl", 64, "wo_ve"): {"layer_list": (1, 9, 13), "image_token_ratio_list": (0.160, 0.587, 0.407)},
    ("qwen2.5-vl", 128, "wo_ve"): {"layer_list": (1, 9, 13), "image_token_ratio_list": (0.378, 0.587, 0.422)},
    ("qwen2.5-vl", 192, "wo_ve"): {"layer_list": (1, 9, 13), "image_token_ratio_list": (0.597, 0.587, 0.426)},
    ("llava-next", 64, "w_ve"): {
        "image_token_ratio": 0.167,
        "layer_list": (16,),
        "image_token_ratio_list": (0.333,),
    },
    ("llava-next", 128, "w_ve"): {
        "image_token_ratio": 0.333,
        "layer_list": (16,),
        "image_token_ratio_list": (0.333,),
    },
    ("llava-next", 192, "w_ve"): {
        "image_token_ratio": 0.5,
        "layer_list": (16,),
        "image_token_ratio_list": (0.333,),
    },
    ("llava-next", 64, "wo_ve"): {"layer_list": (1, 10, 15), "image_token_ratio_list": (0.160, 0.587, 0.407)},
    ("llava-next", 128, "wo_ve"): {
        "layer_list": (1, 10, 15),
        "image_token_ratio_list": (0.378, 0.587, 0.422),
    },
    ("llava-next", 192, "wo_ve"): {
        "layer_list": (1, 10, 15),
        "image_token_ratio_list": (0.597, 0.587, 0.426),
    },
}
# Encoder-stage settings per family (TRIO.md §5): Qwen2.5-VL-7B's reference reads the first full-attention
# vision block (7) and the last one, windows of 4 on the merged grid, with the capped local rule.
FAMILY_ENCODER: dict[str, dict[str, Any]] = {
    "qwen2.5-vl": {"shallow_layer": 7, "deep_layer": -1, "window": 4, "window_rule": "capped"}
}


def _whole_square(g: Group) -> bool:
    """Whether the group is a whole square grid in raster order (or carries no grid metadata)."""
    if g.row is None or g.col is None:
        return True
    side = int(g.row.max()) + 1
    raster = torch.arange(g.size, device=g.row.device)
    return side * side == g.size and bool((g.row * side + g.col == raster).all())


@dataclass(frozen=True, kw_only=True)
class TRIO(TokenMethod):
    """Gradient saliency of a layer-local proxy loss + feature-space NMS; optional [CLS]-attention encoder stage.

    Follows ocy1/TRIO ``llava/model/modeling_llama_x.py::LlamaModel_X.layer_prune`` (LLM stages) and
    ``llava/model/llava_arch.py::encode_images`` (encoder stage).

    Args:
        layer_list: 1-based counts of decoder layers run before each LLM drop.
        image_token_list: visual tokens per image kept at each LLM drop.
        visual_token_num: tokens per image kept by the encoder stage (``None``: no encoder stage).
        image_token_ratio: encoder stage as a fraction of each image's tokens (instead of ``visual_token_num``).
        image_token_ratio_list: LLM stages as fractions of the tokens each receives (instead of
            ``image_token_list``); for Qwen2.5-VL / LLaVA-NeXT's variable token counts.
        k_positions: prompt positions in the proxy loss (reference 4).
        include_last: include the last prompt position in the loss (reference excludes it).
        tau: cosine-similarity suppression threshold of the NMS (reference 0.8).
        use_nms: ``False`` for plain top-k by saliency (ablation).
        probe: ``"fast"`` (K/V for all tokens, layer + LM head for K rows) or ``"reference"`` (full layer and
            full-vocabulary logits for every position); both give the same saliency.
        probe_compile: ``"off"`` (eager), ``"auto"`` (the fast probe captured by ``torch.compile`` with CUDA graphs
            on a GPU, eager elsewhere) or a ``torch.compile`` backend name; the same saliency either way.
        nms: ``"device"`` (vectorised, no per-token host sync) or ``"loop"`` (the reference host loop).
        shallow_layer, deep_layer: vision layers whose [CLS] attention drives the encoder stage (5, -2); on
            Qwen2.5-VL, the attention tokens receive in those blocks (reference: 7 and -1).
        window: window side on the patch grid for the encoder stage's local half (6 → 16 windows on 24×24).
        local_ratio: share of the encoder budget picked window-locally (0.5).
        window_rule: ``"quota"`` (LLaVA reference: a fixed quota per window) or ``"capped"`` (Qwen2.5-VL
            reference: descending visit with a per-window cap); see :mod:`trio_vlm.methods.window_grid`.
        merge: merge dropped encoder-stage tokens into their nearest kept token (reference True).
        position_mode: ``None`` (family reference), ``"compact"`` or ``"original"``.
        reference_quirks: ``True`` reproduces what the authors' published code selects where it departs from
            the paper (Qwen2.5-VL: probe layer L-1, ``embed_tokens`` as output head, non-causal prefill
            layers after an LLM drop; LLaVA-NeXT: encoder budget per tile on the grid before unpadding, LLM
            stages prune the base tile only); see :mod:`trio_vlm.methods.trio_reference`. LLaVA-1.5's code
            follows the paper, so nothing changes there. Default ``False``: the paper's algorithm.
    """

    layer_list: tuple[int, ...] = (1, 10, 15)
    image_token_list: tuple[int, ...] = (92, 54, 22)
    visual_token_num: int | None = None
    image_token_ratio: float | None = None
    image_token_ratio_list: tuple[float, ...] = ()
    k_positions: int = 4
    include_last: bool = False
    tau: float = 0.8
    use_nms: bool = True
    probe: str = "fast"
    probe_compile: str = "off"
    nms: str = "device"
    shallow_layer: int = 5
    deep_layer: int = -2
    window: int = 6
    local_ratio: float = 0.5
    window_rule: str = "quota"
    merge: bool = True
    position_mode: str | None = None
    reference_quirks: bool = False

    name: ClassVar[str] = "trio"
    display_name: ClassVar[str] = "TRIO"
    paper_name: ClassVar[str | None] = "TRIO (Ours)"
    table_order: ClassVar[int] = 50
    modes: ClassVar[tuple[str, ...]] = ("wo_ve", "w_ve")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("window_rule", self.window_rule, RULES)
        check_choice("probe", self.probe, ("fast", "reference"))
        check_choice("probe_compile", self.probe_compile, PROBE_COMPILE)
        check_choice("nms", self.nms, ("device", "loop"))
        check_choice("include_last", self.include_last, (True, False))
        check_choice("use_nms", self.use_nms, (True, False))
        check_choice("merge", self.merge, (True, False))
        check_choice("reference_quirks", self.reference_quirks, (True, False))
        check_int("k_positions", self.k_positions, low=1)
        check_int("window", self.window, low=1)
        check_int("shallow_layer", self.shallow_layer)
        check_int("deep_layer", self.deep_layer)
        check_float("tau", self.tau, low=0.0, high=1.0, open_low=True)
        check_float("local_ratio", self.local_ratio, low=0.0, high=1.0)

    @classmethod
    def reference_config(cls, family: str, budget: int, mode: str | None) -> dict[str, Any]:
        """The authors' schedules (and our documented choices) at 64/128/192; another budget takes the
        schedule of the nearest published one, fitted to that budget (:func:`trio_vlm.presets.at_budget`)."""
        extra = {"image_token_list": (), **FAMILY_ENCODER.get(family, {})}
        return presets.published_schedule(cls, PUBLISHED, family, budget, mode or "wo_ve", extra)

    def stage_output(self, stage: Stage, keep: int, available: int) -> int:
        """The reference's quota arithmetic on a square grid: ``int(keep/2) // windows`` per window plus the
        global half, so an encoder budget not divisible by twice the window count keeps slightly fewer."""
        if not stage.is_encoder or self.window_rule != "quota" or keep >= available:
            return keep
        side = math.isqrt(available)
        if side * side != available or side % self.window:
            return keep
        windows = (side // self.window) ** 2
        local = int(keep * self.local_ratio)
        return local // windows * windows + keep - local

    # ---- TokenMethod ---------------------------------------------------------------------------------

    def cls_attention_layers(self) -> tuple[int, ...]:
        return (self.shallow_layer, self.deep_layer) if self.schedule().has_encoder_stage else ()

    def causal_after_drop(self, family: str) -> bool:
        # The Qwen2.5-VL reference rebuilds cache_position from the cache length after a drop (non-causal).
        return not self._quirks(family, trio_reference.QWEN)

    def _quirks(self, family: str, quirk_family: str) -> bool:
        return self.reference_quirks and family == quirk_family

    def select(self, ctx: StageContext) -> Selection:
        if ctx.stage.is_encoder:
            return self._select_encoder(ctx)
        return self._select_llm(ctx)

    def saliency(self, ctx: StageContext) -> torch.Tensor:
        """(B, S) probe saliency at an LLM stage."""
        layer, head = ctx.layer_index, None
        if self._quirks(ctx.adapter.family, trio_reference.QWEN):
            layer, head = trio_reference.probe_setup(ctx.adapter, layer)
        if self.probe == "reference":
            return reference_saliency(
                ctx.adapter,
                layer,
                ctx.hidden,
                ctx.layer_kwargs,
                ctx.last_valid,
                self.k_positions,
                self.include_last,
                head,
            )
        return fast_saliency(
            ctx.adapter,
            layer,
            ctx.hidden,
            ctx.layer_kwargs,
            ctx.last_valid,
            ctx.padding,
            self.k_positions,
            self.include_last,
            head,
            self.probe_compile,
        )

    def _select_llm(self, ctx: StageContext) -> Selection:
        saliency = self.saliency(ctx)
        scores = [saliency[g.sample, g.seq_index] for g in ctx.groups]
        # Candidates: the whole image (paper), or the first tokens of its span (LLaVA-NeXT reference code).
        spans, keeps = [g.size for g in ctx.groups], [g.keep for g in ctx.groups]
        if self._quirks(ctx.adapter.family, trio_reference.NEXT):
            schedule, stage = self.schedule(), ctx.stage.llm_index
            spans = [trio_reference.base_span(g, schedule, stage) for g in ctx.groups]
            keeps = [schedule.llm_keep(stage, span) for span in spans]
        candidates = [s[:span] for s, span in zip(scores, spans)]
        if not self.use_nms:
            kept = [topk_select(s, k) for s, k in zip(candidates, keeps)]
        else:
            feats = [ctx.hidden[g.sample, g.seq_index[:span]] for g, span in zip(ctx.groups, spans)]
            if self.nms == "device":  # every image of the batch in one batched NMS
                kept = nms_select_batched(candidates, feats, keeps, self.tau)
            else:
                kept = [nms_select_loop(s, f, k, self.tau) for s, f, k in zip(candidates, feats, keeps)]
        rest = [torch.arange(span, g.size, device=k.device) for g, span, k in zip(ctx.groups, spans, kept)]
        return Selection(kept=[torch.cat([k, r]) for k, r in zip(kept, rest)], scores=scores)

    def _select_encoder(self, ctx: StageContext) -> Selection:
        if self._quirks(ctx.adapter.family, trio_reference.NEXT):
            return self._select_tiles_before_unpadding(ctx)
        shallow = ctx.cls_attention[self.shallow_layer]
        deep = ctx.cls_attention[self.deep_layer]
        kept, scores, replacement = [], [], []
        for g in ctx.groups:
            if self.window_rule == "quota" and _whole_square(g):  # the LLaVA reference, exactly
                idx = window_global_select(
                    shallow[g.image_row], deep[g.image_row], g.keep, self.window, self.local_ratio
                )
            else:
                idx = grid_window_global_select(
                    shallow[g.image_row],
                    deep[g.image_row],
                    g.row,
                    g.col,
                    g.keep,
                    self.window,
                    self.local_ratio,
                    tile=g.tile,
                    rule=self.window_rule,
                )
            kept.append(idx)
            scores.append(deep[g.image_row].float())
            feats = ctx.hidden[g.sample, g.seq_index]
            replacement.append(merge_into_nearest(feats, idx) if self.merge else None)
        return Selection(kept=kept, scores=scores, replacement=replacement)

    def _select_tiles_before_unpadding(self, ctx: StageContext) -> Selection:
        """LLaVA-NeXT reference code: every tile keeps the encoder budget of a whole tile on its whole grid."""
        shallow = ctx.cls_attention_rows[self.shallow_layer]
        deep = ctx.cls_attention_rows[self.deep_layer]
        kept, scores, replacement = [], [], []
        for g in ctx.groups:
            projected = ctx.projected_rows[g.image_row] if ctx.projected_rows is not None else None
            idx, merged = trio_reference.tile_selection(
                g,
                shallow[g.image_row],
                deep[g.image_row],
                projected,
                self.schedule(),
                self.window,
                self.local_ratio,
                self.merge,
            )
            kept.append(idx)
            scores.append(deep[g.image_row][g.patch].float())
            replacement.append(merged)
        return Selection(kept=kept, scores=scores, replacement=replacement)
