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
        """Every sample's packed images, read with a constant number of host reads for the whole batch: the
        image tokens and their newline flags once, then (when the projected tiles were captured) one batched
        check of every image's base tile row and, without ``image_sizes``, one of every candidate crop grid."""
        mask = kinds > 0
        flat = mask.nonzero()  # (T, 2), sample-major
        newline = self.model.model.image_newline.detach().to(embeds.device, embeds.dtype)
        is_newline = (embeds[flat[:, 0], flat[:, 1]] == newline).all(-1)
        samples, where, flags = torch.stack([flat[:, 0], flat[:, 1], is_newline.long()]).tolist()  # one read
        packed_images: list[tuple[int, PackedImage]] = []
        start = 0
        for k in range(1, len(where) + 1):  # runs of consecutive positions within a sample
            if k == len(where) or samples[k] != samples[start] or where[k] != where[k - 1] + 1:
                run = flat[start:k, 1]
                for packed in parse_run(run, [bool(f) for f in flags[start:k]], self.tile_side**2):
                    packed_images.append((samples[start], packed))
                start = k
        known = self._known_grids(packed_images)
        rows = self._base_rows(packed_images, embeds, known)
        grids = self._grids(packed_images, embeds, rows, known)
        out: list[list[VisualItem]] = [[] for _ in range(kinds.shape[0])]
        for (b, packed), row, grid in zip(packed_images, rows, grids):
            out[b].append(self._item(packed, row, grid))
        return out

    def _known_grids(
        self, images: list[tuple[int, PackedImage]]
    ) -> list[tuple[int, int, torch.Tensor] | None]:
        """Crop grids read off ``image_sizes`` (when the forward received them) or unambiguous from the token
        counts alone; ``None`` where the captured tile features must decide."""
        config = self.model.config
        side, tile_px = self.tile_side, config.vision_config.image_size
        out: list[tuple[int, int, torch.Tensor] | None] = []
        for i, (_, packed) in enumerate(images):
            if not packed.height:
                out.append((0, 0, torch.empty(0, 0, dtype=torch.long)))
            elif self._image_sizes is not None and i < len(self._image_sizes):
                grid = exact_grid(self._image_sizes[i], config.image_grid_pinpoints, tile_px, side)
                if tuple(grid[2].shape) != (packed.height, packed.width):
                    raise ValueError(
                        f"image {i}: {packed.height}x{packed.width} crop tokens do not match image size "
                        f"{self._image_sizes[i]}"
                    )
                out.append(grid)
            else:
                found = list(
                    candidate_grids(packed.height, packed.width, config.image_grid_pinpoints, tile_px, side)
                )
                out.append(found[0] if len(found) == 1 and not self._projected else None)
        return out

    def _base_rows(
        self, images: list[tuple[int, PackedImage]], embeds: torch.Tensor, known: list
    ) -> list[int]:
        """Each image's projector row (tile) of its base tile: images in prompt order, each taking its tiles'
        rows, unless the captured projections say otherwise — ``generate`` expands a batch for beam search or
        several returned sequences after encoding each image once, so copies of a prompt share their rows."""
        expected, at = [], 0
        for (_, packed), grid in zip(images, known):
            expected.append(at)
            at += 1 + (grid[0] * grid[1] if grid is not None else self._tile_count(packed))
        if not self._projected or not images:
            return expected
        projected = torch.cat(self._projected)
        usable = [r < projected.shape[0] for r in expected]
        checks = [
            (projected[r].to(embeds.device, embeds.dtype) == embeds[b, p.base]).all()
            for (b, p), r, ok in zip(images, expected, usable)
            if ok
        ]
        same = torch.stack(checks).tolist() if checks else []  # one read for every image
        verdict = iter(same)
        rows = []
        for (b, packed), row, ok in zip(images, expected, usable):
            if ok and next(verdict):
                rows.append(row)
                continue
            base = embeds[b, packed.base]  # a copy of an expanded prompt: find its image's row (rare path)
            match = (
                (projected.to(base.device, base.dtype) == base[None]).flatten(1).all(1).nonzero().flatten()
            )
            rows.append(int(match[0]) if match.numel() else row)
        return rows

    def _tile_count(self, packed: PackedImage) -> int:
        """Crop tiles behind a packed image (0 for a base-only image): from its grid's shape alone when there is
        one candidate, else resolved later (the expected rows then only need the base tile's)."""
        if not packed.height:
            return 0
        config = self.model.config
        found = list(
            candidate_grids(
                packed.height,
                packed.width,
                config.image_grid_pinpoints,
                config.vision_config.image_size,
                self.tile_side,
            )
        )
        return (
            found[0][0] * found[0][1] if len(found) == 1 else max(h * w for h, w, _ in found) if found else 0
        )

    def _grids(
        self, images: list[tuple[int, PackedImage]], embeds: torch.Tensor, rows: list[int], known: list
    ) -> list[tuple[int, int, torch.Tensor] | None]:
        """Each image's crop-tile grid and surviving crop-grid indices: ``known`` ones as they are, the others
        the candidate whose tile features match the prompt's tokens (one batched check for all of them)."""
        config = self.model.config
        side, tile_px = self.tile_side, config.vision_config.image_size
        out = list(known)
        pending = {
            i: list(candidate_grids(p.height, p.width, config.image_grid_pinpoints, tile_px, side))
            for i, ((_, p), grid) in enumerate(zip(images, known))
            if grid is None
        }
        if not pending:
            return out
        projected = torch.cat(self._projected) if self._projected else None
        checks, owners = [], []
        for i, found in pending.items():
            b, packed = images[i]
            for c, candidate in enumerate(found):
                check = self._candidate_check(packed, embeds[b], projected, rows[i], candidate)
                if check is not None:
                    checks.append(check)
                    owners.append((i, c))
        verdicts = torch.stack(checks).tolist() if checks else []  # one read for every candidate
        for (i, c), ok in zip(owners, verdicts):
            if ok and out[i] is None:
                out[i] = pending[i][c]
        for i in pending:
            if out[i] is None:
                b, packed = images[i]
                raise ValueError(
                    f"could not map LLaVA-NeXT image {i}'s {packed.height}x{packed.width} crop tokens to its tiles; "
                    "pass image_sizes to the forward call"
                )
        return out

    def _candidate_check(
        self,
        packed: PackedImage,
        embeds: torch.Tensor,
        projected: torch.Tensor | None,
        base_row: int,
        candidate: tuple[int, int, torch.Tensor],
    ) -> torch.Tensor | None:
        """A device flag: three of the image's crop tokens equal the projected tile features this grid says
        they are (``None`` when the grid points past the captured tiles)."""
        if projected is None:
            return None
        side = self.tile_side
        tiles_h, tiles_w, flat = candidate
        flat = flat.flatten()
        parts = []
        for k in sorted({0, flat.numel() // 2, flat.numel() - 1}):
            gr, gc = divmod(int(flat[k]), tiles_w * side)  # flat is a host tensor
            row = base_row + 1 + (gr // side) * tiles_w + gc // side
            if row >= projected.shape[0]:
                return None
            want = projected[row, (gr % side) * side + gc % side].to(embeds.device, embeds.dtype)
            parts.append((embeds[packed.crops[k]] == want).all())
        return torch.stack(parts).all()

    def _item(
        self, packed: PackedImage, first_row: int, grid: tuple[int, int, torch.Tensor] | None
    ) -> VisualItem:
        side = self.tile_side
        device = packed.base.device
        patch = torch.arange(side * side, device=device)
        tile = torch.zeros(side * side, dtype=torch.long, device=device)
        if packed.height:
            _, tiles_w, flat = grid
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
        return VisualItem(
            seq_index=torch.cat([packed.base, packed.crops]),
            vision_row=first_row + tile,
            patch=patch,
            tile=tile,
            row=torch.div(patch, side, rounding_mode="floor"),
            col=patch % side,
        )
