"""The method contract: every type a token-reduction method reads or returns, in one module.

A method says *where* it acts (its :class:`~trio_vlm.schedule.Schedule`, one :class:`Stage` per drop) and,
at each stage, *which* visual tokens of each image survive (a :class:`Selection` per :class:`StageContext`).
The engine does all sequence surgery. Adapters describe a prompt's images as :class:`VisualItem` s; every
drop is recorded as a :class:`PruneEvent`. This module imports nothing from the rest of the package except
the schedule, so methods, adapters and the engine can all depend on it without cycles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from trio_vlm.schedule import Schedule

#: Per-token metadata an adapter attaches to each visual token, carried to every stage's groups.
META_FIELDS = ("vision_row", "patch", "tile", "row", "col")


@dataclass(frozen=True)
class Stage:
    """Where one drop happens.

    ``after_layers`` counts the decoder layers already run (the schedule's ``L``; 0 for the encoder stage,
    which drops after the vision encoder + projector, before decoder layer 0). ``layer_index`` is the 0-based
    decoder layer that first sees the shorter sequence (equal to ``after_layers``). ``llm_index`` is the
    drop's position in ``layer_list`` (``None`` for the encoder stage).
    """

    after_layers: int
    llm_index: int | None = None

    @classmethod
    def encoder(cls) -> Stage:
        return cls(0, None)

    @property
    def is_encoder(self) -> bool:
        return self.llm_index is None

    @property
    def layer_index(self) -> int:
        return self.after_layers

    @property
    def key(self) -> str | int:
        """JSON form: ``"encoder"`` or ``L`` (layers run before the drop)."""
        return "encoder" if self.is_encoder else self.after_layers

    def __str__(self) -> str:
        return "encoder" if self.is_encoder else f"after layer {self.after_layers}"


@dataclass
class VisualItem:
    """One image or video of one sample, as an adapter lays it out in the prompt.

    ``seq_index`` are the prompt positions of its prunable tokens (ascending; structural tokens such as
    LLaVA-NeXT's row newlines are left out and always kept). Per token: ``vision_row`` is the row of the
    vision-side tables (a CLIP tile, a Qwen2.5-VL image or video) the token comes from, ``patch`` its index
    on that row's patch axis, ``tile``/``row``/``col`` its spatial place (see :class:`Group`).
    """

    seq_index: torch.Tensor
    vision_row: torch.Tensor
    patch: torch.Tensor
    tile: torch.Tensor
    row: torch.Tensor | None = None
    col: torch.Tensor | None = None
    kind: str = "image"

    def __post_init__(self) -> None:
        n = self.seq_index.numel()
        for name in META_FIELDS:
            value = getattr(self, name)
            if value is not None and value.numel() != n:
                raise ValueError(f"visual item has {n} tokens but {value.numel()} {name} entries")


@dataclass
class Group:
    """The visual tokens of one image of one sample, as they stand when a stage starts.

    ``seq_index`` indexes the current (possibly already pruned) sequence of sample ``sample``; ``keep`` is
    how many must survive; ``image_row`` is the group's row in the vision-side tables of the context
    (``cls_attention``, ``vision_inputs``), whose entries are aligned with the group's tokens at the encoder
    stage; ``original`` holds the tokens' indices in the sample's original visual-token sequence.

    Spatial metadata filled by the model-family adapter (``None`` where a family has none), one entry per
    token: ``tile`` (LLaVA-NeXT: 0 = base image, 1.. = crops in raster order; Qwen2.5-VL video: frame;
    else 0), ``row``/``col`` (the token's place on its tile's patch grid; for Qwen2.5-VL the merged 2×2
    grid), ``patch`` (the token's index on the patch axis of its vision row, for reading the whole rows of
    :attr:`StageContext.cls_attention_rows` / :attr:`StageContext.projected_rows`). ``kind`` is ``"image"`` or
    ``"video"``.
    """

    sample: int
    image_row: int
    seq_index: torch.Tensor
    original: torch.Tensor
    keep: int
    tile: torch.Tensor | None = None
    row: torch.Tensor | None = None
    col: torch.Tensor | None = None
    kind: str = "image"
    patch: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.seq_index.numel())


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

    ``hidden`` (B, S, D) is the sequence entering decoder layer ``stage.layer_index`` (for the encoder stage:
    the input embeddings with projected image features in place). ``layer_kwargs`` are the keyword arguments
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
    attention or keys of the last layer before the drop (FastV, DART). ``prompt_embeds`` (B, S0, D) are the
    language model's input embeddings of the whole prompt before any drop, and ``prompt_index`` (B, S) maps
    every current position to its position in that prompt (-1 for re-padding).
    ``adapter`` is the model-family adapter (:class:`trio_vlm.adapters.base.ModelAdapter`): module access and
    the few recomputed attention rows a method may ask for.
    At the encoder stage, ``cls_attention_rows`` holds the same vision-side rows *before* they are aligned with
    the groups (per layer, one row per vision row over its whole patch axis: a LLaVA-NeXT crop tile before
    unpadding), and ``projected_rows`` the projector's output per vision row over that axis where the adapter
    captures it (LLaVA-NeXT; ``None`` elsewhere); index both with ``Group.image_row`` and ``Group.patch``.
    """

    stage: Stage
    hidden: torch.Tensor
    groups: list[Group]
    padding: torch.Tensor
    last_valid: torch.Tensor
    layer_kwargs: dict[str, Any]
    adapter: Any
    cls_attention: dict[int, Any] = field(default_factory=dict)
    vision_inputs: dict[int, Any] = field(default_factory=dict)
    previous_hidden: torch.Tensor | None = None
    previous_kwargs: dict[str, Any] | None = None
    prompt_embeds: torch.Tensor | None = None
    prompt_index: torch.Tensor | None = None
    cls_attention_rows: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    projected_rows: list[torch.Tensor] | None = None

    @property
    def layer_index(self) -> int:
        return self.stage.layer_index


@dataclass
class Selection:
    """A method's decision for each group.

    ``kept`` holds local indices into the group (ascending, unique) and ``scores`` the score of every token
    of the group (or ``None``). ``replacement`` (optional) gives new features for the kept tokens, aligned
    with ``kept`` (merging). ``order`` (optional) is a permutation of ``range(len(kept))``: the kept tokens
    enter the new sequence in that order instead of their original order (HoloV, VisionZip). ``appended``
    (optional) are extra feature rows per group that enter the sequence right after the group's kept
    tokens (SparseVLM's recycled clusters); ``prepended`` likewise right before them (VisionZip's [CLS]
    token). Created rows count as the group's tokens in later stages; with original position ids they take
    those of the group's last (appended) or first (prepended) kept token.
    """

    kept: list[torch.Tensor]
    scores: list[torch.Tensor | None]
    replacement: list[torch.Tensor | None] | None = None
    order: list[torch.Tensor | None] | None = None
    appended: list[torch.Tensor | None] | None = None
    prepended: list[torch.Tensor | None] | None = None


@dataclass
class PruneEvent:
    """One drop during one prefill call.

    Per sample: ``candidates`` are the original visual-token indices that entered the stage, ``scores`` the
    score of each candidate (``None`` when the stage kept everything and scored nothing), ``kept`` the original
    indices kept, ascending. Original indices count the sample's visual tokens in prompt order (image 0 first);
    indices past them name tokens a stage created (merged clusters, a [CLS] token), numbered in creation order.
    """

    stage: Stage
    call: int
    method: str
    candidates: list[torch.Tensor] = field(default_factory=list)
    scores: list[torch.Tensor | None] = field(default_factory=list)
    kept: list[torch.Tensor] = field(default_factory=list)

    @property
    def layer_index(self) -> int:
        return self.stage.layer_index

    @property
    def tokens_before(self) -> list[int]:
        return [int(c.numel()) for c in self.candidates]

    @property
    def tokens_after(self) -> list[int]:
        return [int(k.numel()) for k in self.kept]


__all__ = [
    "META_FIELDS",
    "Group",
    "PruneEvent",
    "RowTable",
    "Schedule",
    "Selection",
    "Stage",
    "StageContext",
    "VisualItem",
]
