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


def _runs(kinds_row: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """Maximal runs of consecutive positions of one visual kind: [(kind, positions)]."""
    positions = (kinds_row > 0).nonzero().flatten()
    if positions.numel() == 0:
        return []
    kinds = kinds_row[positions]
    breaks = ((positions[1:] != positions[:-1] + 1) | (kinds[1:] != kinds[:-1])).nonzero().flatten() + 1
    return [(int(kinds_row[p[0]]), p) for p in torch.tensor_split(positions, breaks.cpu())]


def _grid_metadata(pos3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(frame, row, col) of a run's tokens from their 3-D positions; row/col ``None`` unless they form a
    full grid (positions not built by ``get_rope_index`` carry no layout)."""
    _, frame = torch.unique(pos3[0], return_inverse=True)
    row, col = pos3[1] - pos3[1].min(), pos3[2] - pos3[2].min()
    n_frames = int(frame.max()) + 1
    height, width = int(row.max()) + 1, int(col.max()) + 1
    raster = (frame * height + row) * width + col
    expected = torch.arange(pos3.shape[1], device=pos3.device)
    if n_frames * height * width != pos3.shape[1] or not bool((raster == expected).all()):
        return torch.zeros_like(frame), None, None
    return frame, row, col


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
        runs = [_runs(kinds[b]) for b in range(kinds.shape[0])]
        n_images = sum(kind == IMAGE for sample in runs for kind, _ in sample)
        counters = {IMAGE: 0, VIDEO: n_images}  # the tower runs on all images, then on all videos
        out = []
        for b, sample in enumerate(runs):
            items = []
            for kind, pos in sample:
                frame, row, col = _grid_metadata(positions[:, b, pos])
                n = pos.numel()
                items.append(
                    VisualItem(
                        seq_index=pos,
                        vision_row=torch.full((n,), counters[kind], dtype=torch.long, device=pos.device),
                        patch=torch.arange(n, device=pos.device),
                        tile=frame,
                        row=row,
                        col=col,
                        kind="image" if kind == IMAGE else "video",
                    )
                )
                counters[kind] += 1
            out.append(items)
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
