"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``: CLIP tiles, any-resolution crops, row newlines) adapter.

Decisions (docs/families.md): the ``image_newline`` tokens that end each crop row are structural — never
candidates, always kept, not counted in budgets or events; the encoder stage prunes each tile (base image
and every crop) on its own with the image's budget split over tiles by size (VisionZip/SCOPE official: per
crop); LLM stages treat the image's tokens as one group. Original visual indices count base tokens first,
then crop tokens row by row.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trio_vlm.adapters.llava import LlavaAdapter
from trio_vlm.adapters.next_layout import PackedImage, candidate_grids, exact_grid, parse_run
from trio_vlm.contract import VisualItem


class LlavaNextAdapter(LlavaAdapter):
    """Stock HF LLaVA-NeXT. Reference position convention: contiguous renumbering (as LLaVA-1.5)."""

    family = "llava-next"
    split_tiles_at_encoder = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        strategy = model.config.vision_feature_select_strategy
        if strategy != "default":
            raise ValueError(
                f"LLaVA-NeXT with vision_feature_select_strategy={strategy!r} is not supported (only 'default')"
            )
        self._image_sizes: list[tuple[int, int]] | None = None
        self._projected: list[torch.Tensor] = []

    @property
    def tile_side(self) -> int:
        vision = self.model.config.vision_config
        return vision.image_size // vision.patch_size

    @property
    def tokens_per_image(self) -> int:  # pragma: no cover - variable per image
        raise ValueError("LLaVA-NeXT images have a variable number of tokens (any-resolution crops)")

    # ---- capture ---------------------------------------------------------------------------------------
    def install_hooks(self) -> list[Any]:
        projector = self.model.model.multi_modal_projector
        return [projector.register_forward_hook(self._capture_projection)]

    def _capture_projection(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self._projected.append(output.detach())

    def begin_prefill(self, kwargs: dict[str, Any]) -> None:
        sizes = kwargs.get("image_sizes")
        self._image_sizes = None if sizes is None else [tuple(int(v) for v in s) for s in sizes.tolist()]

    def end_prefill(self) -> None:
        self._image_sizes = None
        self._projected = []

    def projected_rows(self) -> list[torch.Tensor] | None:
        """Every tile's projected features (base image and crops, 24×24 on the 7B) before unpadding."""
        return list(torch.cat(self._projected)) if self._projected else None

    def visual_token_counts(self, kinds: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """Image tokens per sample without the row newlines (structural, never counted)."""
        newline = self.model.model.image_newline.detach().to(embeds.device, embeds.dtype)
        is_newline = (embeds == newline).all(-1) & (kinds > 0)
        return (kinds > 0).sum(1) - is_newline.sum(1)

    # ---- layout ------------------------------------------------------------------------------------------
    def visual_layout(
        self, kinds: torch.Tensor, embeds: torch.Tensor, positions: torch.Tensor
    ) -> list[list[VisualItem]]:
        newline = self.model.model.image_newline.detach()
        out, image_index, first_row = [], 0, 0
        for b in range(kinds.shape[0]):
            visual = (kinds[b] > 0).nonzero().flatten()
            breaks = (visual[1:] != visual[:-1] + 1).nonzero().flatten() + 1
            items = []
            for run in torch.tensor_split(visual, breaks.cpu()) if visual.numel() else []:
                is_newline = (embeds[b, run] == newline.to(embeds.device, embeds.dtype)).all(-1)
                for packed in parse_run(run, is_newline, self.tile_side**2):
                    row = self._base_row(packed, embeds[b], first_row)
                    item, tiles = self._item(packed, embeds[b], image_index, row)
                    items.append(item)
                    image_index += 1
                    first_row = max(first_row, row + tiles)
            out.append(items)
        return out

    def _base_row(self, packed: PackedImage, embeds: torch.Tensor, expected: int) -> int:
        """The projector row (tile) holding this image's base tile: ``expected`` (images in prompt order) unless
        the captured projections say otherwise — ``generate`` expands a batch for beam search or several
        returned sequences after encoding each image once, so copies of a prompt share their image's rows."""
        if not self._projected:
            return expected
        projected = torch.cat(self._projected)
        base = embeds[packed.base]
        if expected < projected.shape[0] and torch.equal(
            projected[expected].to(base.device, base.dtype), base
        ):
            return expected
        for row in range(projected.shape[0]):
            if torch.equal(projected[row].to(base.device, base.dtype), base):
                return row
        return expected

    def _item(
        self, packed: PackedImage, embeds: torch.Tensor, image: int, first_row: int
    ) -> tuple[VisualItem, int]:
        side = self.tile_side
        device = packed.base.device
        patch = torch.arange(side * side, device=device)
        tile = torch.zeros(side * side, dtype=torch.long, device=device)
        tiles_h = tiles_w = 0
        if packed.height:
            tiles_h, tiles_w, flat = self._resolve_grid(packed, embeds, image, first_row)
            flat = flat.flatten().to(device)
            grid_row = torch.div(flat, tiles_w * side, rounding_mode="floor")
            grid_col = flat % (tiles_w * side)
            crop_tile = (
                1
                + torch.div(grid_row, side, rounding_mode="floor") * tiles_w
                + torch.div(grid_col, side, rounding_mode="floor")
            )
            patch = torch.cat([patch, (grid_row % side) * side + grid_col % side])
            tile = torch.cat([tile, crop_tile])
        item = VisualItem(
            seq_index=torch.cat([packed.base, packed.crops]),
            vision_row=first_row + tile,
            patch=patch,
            tile=tile,
            row=torch.div(patch, side, rounding_mode="floor"),
            col=patch % side,
        )
        return item, 1 + tiles_h * tiles_w

    def _resolve_grid(
        self, packed: PackedImage, embeds: torch.Tensor, image: int, first_row: int
    ) -> tuple[int, int, torch.Tensor]:
        """The image's crop-tile grid and the surviving crop-grid indices: from ``image_sizes`` when the
        forward received them, else the candidate whose tile features match the prompt's tokens."""
        config = self.model.config
        side, tile_px = self.tile_side, config.vision_config.image_size
        if self._image_sizes is not None and image < len(self._image_sizes):
            tiles_h, tiles_w, flat = exact_grid(
                self._image_sizes[image], config.image_grid_pinpoints, tile_px, side
            )
            if tuple(flat.shape) != (packed.height, packed.width):
                raise ValueError(
                    f"image {image}: {packed.height}x{packed.width} crop tokens do not match image size "
                    f"{self._image_sizes[image]}"
                )
            return tiles_h, tiles_w, flat
        found = list(candidate_grids(packed.height, packed.width, config.image_grid_pinpoints, tile_px, side))
        projected = torch.cat(self._projected) if self._projected else None
        for tiles_h, tiles_w, flat in found:
            if projected is None:
                if len(found) == 1:
                    return tiles_h, tiles_w, flat
                break
            if self._matches(packed, embeds, projected, first_row, tiles_w, flat):
                return tiles_h, tiles_w, flat
        raise ValueError(
            f"could not map LLaVA-NeXT image {image}'s {packed.height}x{packed.width} crop tokens to its tiles; "
            "pass image_sizes to the forward call"
        )

    def _matches(
        self,
        packed: PackedImage,
        embeds: torch.Tensor,
        projected: torch.Tensor,
        first_row: int,
        tiles_w: int,
        flat: torch.Tensor,
    ) -> bool:
        side = self.tile_side
        flat = flat.flatten()
        for k in {0, flat.numel() // 2, flat.numel() - 1}:
            gr, gc = divmod(int(flat[k]), tiles_w * side)
            row = first_row + 1 + (gr // side) * tiles_w + gc // side
            if row >= projected.shape[0]:
                return False
            want = projected[row, (gr % side) * side + gc % side].to(embeds.device, embeds.dtype)
            if not torch.equal(embeds[packed.crops[k]], want):
                return False
        return True
