"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``: windowed ViT + 2×2 merger + Qwen2 with M-RoPE) adapter.

Dynamic resolution: every image (and video) has its own number of tokens. Positions are 3-D (temporal,
height, width); the reference keeps the kept tokens' original 3-D positions after a drop, and the model's
decode positions (``rope_deltas``) then stay valid as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trio_vlm.adapters.base import ModelAdapter
from trio_vlm.adapters.qwen_vision import merged_scores, received_attention
from trio_vlm.contract import VisualItem

IMAGE, VIDEO = 1, 2


def _per_run(values: torch.Tensor, run: torch.Tensor, size: int, reduce: str) -> torch.Tensor:
    """Per-run ``amin`` / ``amax`` / ``sum`` of ``values`` (tokens labelled with their run id), ``size`` slots."""
    out = torch.zeros(size, dtype=values.dtype, device=values.device)
    return out.scatter_reduce_(0, run, values, reduce=reduce, include_self=False)


def batch_runs(
    kinds: torch.Tensor, positions: torch.Tensor
) -> list[tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
    """Every maximal run of consecutive positions of one visual kind in the batch with its tokens' grid
    metadata — ``[(sample, kind, positions, frame, row, col)]`` — from two host reads for the whole batch.

    A run's frames are numbered in order and its rows / columns are relative to its smallest, all from its
    tokens' 3-D positions (``positions`` (3, B, S)); row/col are ``None`` unless they form a full grid in
    raster order (positions not built by ``get_rope_index`` carry no layout)."""
    flat = (kinds > 0).nonzero()  # (T, 2), sample-major: the first host read
    total = int(flat.shape[0])
    if total == 0:
        return []
    sample, pos = flat[:, 0], flat[:, 1]
    kind = kinds[sample, pos]
    step = torch.arange(total, device=pos.device)
    start = torch.ones(total, dtype=torch.bool, device=pos.device)
    start[1:] = (sample[1:] != sample[:-1]) | (pos[1:] != pos[:-1] + 1) | (kind[1:] != kind[:-1])
    run = torch.cumsum(start.long(), 0) - 1
    t, h, w = (positions[a, sample, pos] for a in range(3))
    new_frame = start.clone()
    new_frame[1:] |= t[1:] != t[:-1]
    first = _per_run(step, run, total, "amin")
    frames_so_far = torch.cumsum(new_frame.long(), 0)
    frame = frames_so_far - frames_so_far[first[run]]
    row = h - _per_run(h, run, total, "amin")[run]
    col = w - _per_run(w, run, total, "amin")[run]
    height, width = _per_run(row, run, total, "amax") + 1, _per_run(col, run, total, "amax") + 1
    frames = _per_run(frame, run, total, "amax") + 1
    length = _per_run(torch.ones_like(run), run, total, "sum")
    raster = (frame * height[run] + row) * width[run] + col == step - first[run]
    grid = (frames * height * width == length) & (_per_run((~raster).long(), run, total, "sum") == 0)
    head = first.clamp(max=total - 1)
    table = torch.cat([run[-1:] + 1, first, length, grid.long(), sample[head], kind[head]])
    values = table.tolist()  # the second host read
    count = values[0]
    columns = [values[1 + k * total : 1 + k * total + count] for k in range(5)]
    out = []
    for begin, n, is_grid, b, k in zip(*columns):
        span = slice(begin, begin + n)
        out.append(
            (b, k, pos[span], frame[span], row[span] if is_grid else None, col[span] if is_grid else None)
        )
    return out


class Qwen25VLAdapter(ModelAdapter):
    """Stock HF Qwen2.5-VL. Reference position convention: original 3-D M-RoPE positions."""

    family = "qwen2.5-vl"
    default_position_mode = "original"
    vision_row_prefix = 0

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        layer_types = set(getattr(self.language_model.config, "layer_types", None) or ["full_attention"])
        if layer_types != {"full_attention"}:
            raise ValueError(
                f"Qwen2.5-VL with sliding-window decoder layers ({sorted(layer_types)}) is not supported: "
                "pruned sequences get full causal masks"
            )
        self._grids: list[torch.Tensor] = []

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.model.visual

    @property
    def vision_layers(self) -> nn.ModuleList:
        return self.vision_tower.blocks

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    @property
    def video_token_id(self) -> int:
        return int(self.model.config.video_token_id)

    @property
    def full_attention_blocks(self) -> tuple[int, ...]:
        """Vision blocks with full (per image/frame) attention; the others attend within windows."""
        return tuple(self.vision_tower.config.fullatt_block_indexes)

    # ---- capture ---------------------------------------------------------------------------------------
    def check_supported(self, method: Any) -> None:
        if method.vision_layer_inputs():
            raise ValueError(
                f"{method.name} reads CLIP vision-layer inputs ([CLS] row, CLIP keys, LLaVA projector); "
                "Qwen2.5-VL's tower has no [CLS] token and merges 2×2 patches, so it is not supported there"
            )

    def begin_prefill(self, kwargs: dict[str, Any]) -> None:
        """Refuse a prompt with image/video tokens but no ``mm_token_type_ids`` (and no 3-D positions of its own).

        transformers 5.x builds Qwen2.5-VL's 3-D M-RoPE positions from ``mm_token_type_ids`` (0 text, 1 image,
        2 video), which its processor returns; without them the model silently numbers image tokens as text
        (``Qwen2_5_VLModel.compute_3d_position_ids``), and the images' patch grids are lost with them.
        """
        if kwargs.get("mm_token_type_ids") is not None:
            return
        position_ids = kwargs.get("position_ids")
        if position_ids is not None and position_ids.dim() == 3 and position_ids.shape[0] == 3:
            return  # the caller's own 3-D positions
        input_ids, embeds = kwargs.get("input_ids"), kwargs.get("inputs_embeds")
        if input_ids is None and embeds is None:
            return
        if bool((self.visual_kinds(input_ids, embeds) > 0).any()):
            raise ValueError(
                "Qwen2.5-VL input has image/video tokens but no mm_token_type_ids: transformers then gives them "
                "text positions instead of their 3-D M-RoPE grid. Pass the processor's output unchanged (it "
                "includes mm_token_type_ids) or add mm_token_type_ids (0 text, 1 image, 2 video tokens)"
            )

    def on_vision_tower(self, args: tuple, kwargs: dict[str, Any]) -> None:
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        if grid is not None:
            self._grids.append(grid)

    def end_prefill(self) -> None:
        self._grids = []

    # ---- tokens and positions ----------------------------------------------------------------------------
    def visual_kinds(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None
    ) -> torch.Tensor:
        if input_ids is not None:
            return (input_ids == self.image_token_id).long() * IMAGE + (
                input_ids == self.video_token_id
            ).long() * VIDEO
        if inputs_embeds is None:
            raise ValueError("need input_ids or inputs_embeds to locate image tokens")
        embed = self.language_model.get_input_embeddings()
        ids = torch.tensor([self.image_token_id, self.video_token_id], device=inputs_embeds.device)
        image_ref, video_ref = embed(ids).to(inputs_embeds.dtype)
        return (inputs_embeds == image_ref).all(-1).long() * IMAGE + (inputs_embeds == video_ref).all(
            -1
        ).long() * VIDEO

    def visual_mask(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> torch.Tensor:
        return self.visual_kinds(input_ids, inputs_embeds) > 0

    def canonical_positions(
        self, position_ids: torch.Tensor | None, bsz: int, seq: int, start: int, device: torch.device
    ) -> torch.Tensor:
        if position_ids is None:
            position_ids = torch.arange(start, start + seq, device=device)[None]
        if position_ids.dim() == 2:
            position_ids = position_ids[None].expand(3, -1, -1)
        elif position_ids.shape[0] == 4:  # generate() prepends the text positions used for packed masks
            position_ids = position_ids[1:]
        return position_ids.expand(3, bsz, -1)

    def rotary(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if position_ids.dim() == 2:
            position_ids = position_ids[None].expand(3, -1, -1)
        return self.language_model.rotary_emb(hidden, position_ids)

    def layer_position_ids(self, positions: torch.Tensor) -> torch.Tensor | None:
        # Decoder layers only use position_ids for packed FlashAttention; the engine passes explicit masks.
        return None

    def visual_layout(
        self, kinds: torch.Tensor, embeds: torch.Tensor, positions: torch.Tensor
    ) -> list[list[VisualItem]]:
        runs = batch_runs(kinds, positions)
        n_images = sum(kind == IMAGE for _, kind, *_ in runs)
        counters = {IMAGE: 0, VIDEO: n_images}  # the tower runs on all images, then on all videos
        out: list[list[VisualItem]] = [[] for _ in range(kinds.shape[0])]
        for b, kind, pos, frame, row, col in runs:
            n = pos.numel()
            out[b].append(
                VisualItem(
                    seq_index=pos,
                    vision_row=torch.full((n,), counters[kind], dtype=torch.long, device=pos.device),
                    patch=torch.arange(n, device=pos.device),
                    tile=frame if row is not None else torch.zeros_like(frame),
                    row=row,
                    col=col,
                    kind="image" if kind == IMAGE else "video",
                )
            )
            counters[kind] += 1
        return out

    # ---- vision side -------------------------------------------------------------------------------------
    def cls_attention_from_input(
        self, layer: nn.Module, hidden_in: torch.Tensor, layer_kwargs: dict[str, Any] | None = None
    ) -> list[torch.Tensor]:
        """The [CLS]-attention equivalent: per image/video of the tower call, the attention each merged token
        receives in this block (see :mod:`trio_vlm.adapters.qwen_vision`)."""
        if not self._grids or layer_kwargs is None:
            raise RuntimeError("the vision tower's grid_thw was not captured before its blocks ran")
        config = self.vision_tower.config
        received = received_attention(layer, hidden_in, layer_kwargs)
        return merged_scores(
            received, self._grids[-1], config.spatial_merge_size, config.window_size, config.patch_size
        )

    def vision_input_rows(self, hidden_in: torch.Tensor, layer_kwargs: dict[str, Any]) -> list[torch.Tensor]:
        raise ValueError(
            "Qwen2.5-VL vision-layer inputs are window-permuted, unmerged patches; not supported"
        )
