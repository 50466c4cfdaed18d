"""The one interface every token-reduction method implements.

A method says *where* it acts (its :class:`~trio_vlm.schedule.Schedule`) and, at each stage, *which* visual
tokens of each image survive (optionally with merged replacement features). The engine does all sequence
surgery: gathering hidden states, positions, masks and KV-cache bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from trio_vlm.schedule import Schedule

if TYPE_CHECKING:
    from trio_vlm.adapters.base import ModelAdapter


@dataclass
class Group:
    """The visual tokens of one image of one sample, as they stand when a stage starts.

    ``positions`` index the current sequence of sample ``sample``; ``keep`` is how many must survive;
    ``image_row`` is the group's row in the vision-side tables of the context (``cls_attention``,
    ``vision_inputs``), whose entries are aligned with the group's tokens at the encoder stage;
    ``original`` holds the tokens' indices in the sample's original visual-token sequence.

    Spatial metadata filled by the model-family adapter (``None`` where a family has none), one entry per
    token: ``tile`` (LLaVA-NeXT: 0 = base image, 1.. = crops in raster order; Qwen2.5-VL video: frame;
    else 0), ``row``/``col`` (the token's place on its tile's patch grid; for Qwen2.5-VL the merged 2×2
    grid). ``kind`` is ``"image"`` or ``"video"``.
    """

    sample: int
    image_row: int
    positions: torch.Tensor
    original: torch.Tensor
    keep: int
    tile: torch.Tensor | None = None
    row: torch.Tensor | None = None
    col: torch.Tensor | None = None
    kind: str = "image"

    @property
    def size(self) -> int:
        return int(self.positions.numel())


class RowTable:
    """Per-row tensors of different lengths that index like a (rows, N, ...) tensor.

    The engine delivers vision-side tables this way when the groups of one call have different sizes
    (LLaVA-NeXT crops cut by unpadding, Qwen2.5-VL's dynamic resolution): ``table[g.image_row]`` is the
    group's row, aligned with its tokens; ``table[i : i + 1]`` stacks one row; ``float()`` and scalar
    multiplication apply to every row.
    """

    def __init__(self, rows: list[torch.Tensor]) -> None:
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | slice) -> torch.Tensor:
        if isinstance(key, slice):
            picked = self.rows[key]
            if len({tuple(r.shape) for r in picked}) > 1:
                raise ValueError("cannot stack rows of different lengths; index them one at a time")
            return torch.stack(picked)
        return self.rows[key]

    def float(self) -> RowTable:
        return RowTable([r.float() for r in self.rows])

    def __mul__(self, other: float) -> RowTable:
        return RowTable([r * other for r in self.rows])

    __rmul__ = __mul__


@dataclass
class StageContext:
    """Everything a method may read at a stage.

    ``hidden`` (B, S, D) is the sequence entering decoder layer ``layer_index`` (for the encoder stage: the
    input embeddings with projected image features in place). ``layer_kwargs`` are the keyword arguments
    that layer receives for this sequence (mask, rotary embeddings, positions). ``padding`` (B, S) marks real
    tokens; ``last_valid`` (B,) is the index of each sample's last real token. ``cls_attention`` maps a vision
    layer index to the head-averaged [CLS]→patch attention rows (n_images, N) when the method asked for them;
    ``vision_inputs`` maps a vision layer index to that layer's input hidden states (n_images, 1 + N, D_v).
    Rows are indexed by ``Group.image_row`` and aligned with the group's tokens (a :class:`RowTable` when
    rows differ in length). Families without a [CLS] token (Qwen2.5-VL) deliver, as ``cls_attention``, the
    attention each token *receives* in that vision layer (mean over heads and queries, averaged per merged
    2×2 unit) — the signal the Qwen2.5-VL reference uses.
    ``previous_hidden`` / ``previous_kwargs`` are the input and keyword arguments of decoder layer
    ``layer_index - 1`` (same sequence; ``None`` at the encoder stage) for methods that score with the
    attention or keys of the last layer before the drop (FastV, DART).
    """

    stage: str | int
    layer_index: int
    hidden: torch.Tensor
    groups: list[Group]
    padding: torch.Tensor
    last_valid: torch.Tensor
    layer_kwargs: dict[str, Any]
    adapter: ModelAdapter
    cls_attention: dict[int, torch.Tensor] = field(default_factory=dict)
    vision_inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    previous_hidden: torch.Tensor | None = None
    previous_kwargs: dict[str, Any] | None = None


@dataclass
class Selection:
    """A method's decision for each group: ``kept`` local indices into the group (ascending), the ``scores``
    of all the group's tokens, and optional ``replacement`` features for the kept tokens (merging)."""

    kept: list[torch.Tensor]
    scores: list[torch.Tensor | None]
    replacement: list[torch.Tensor | None] | None = None


class TokenMethod:
    """Base class of all methods. Subclasses are dataclasses that implement :meth:`schedule` and
    :meth:`select` and may list vision-layer indices whose [CLS] attention rows they need."""

    name: str = "method"

    def schedule(self) -> Schedule:
        """Where the method acts; subclasses build and validate ``self._schedule`` in ``__post_init__``."""
        schedule = getattr(self, "_schedule", None)
        if schedule is None:
            raise NotImplementedError(f"{type(self).__name__} defines no schedule")
        return schedule

    def cls_attention_layers(self) -> tuple[int, ...]:
        """Vision-encoder layer indices (Python-style, negatives allowed) whose [CLS] rows the encoder stage
        reads; the engine recomputes just those rows so the encoder keeps its fast attention kernel."""
        return ()

    def vision_layer_inputs(self) -> tuple[int, ...]:
        """Vision-encoder layer indices whose *input* hidden states (n_images, 1 + N, D_vision) the encoder
        stage reads (e.g. to recompute keys); index ``-1`` gives the output of layer ``-2``."""
        return ()

    def select(self, ctx: StageContext) -> Selection:
        raise NotImplementedError

    @property
    def position_mode(self) -> str | None:
        """``"compact"``, ``"original"`` or ``None`` (the model family's reference convention); methods with a
        ``positions`` field report it."""
        return getattr(self, "positions", None)
