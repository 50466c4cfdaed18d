"""Where a method drops tokens: an optional encoder stage and LLM stages after given decoder layers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def _as_int_tuple(values: Sequence[int] | None, name: str) -> tuple[int, ...]:
    if values is None:
        return ()
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name} must be a list of integers, got the string {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must contain integers only, got {v!r} in {list(values)!r}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class Schedule:
    """A pruning schedule.

    ``layer_list`` holds 1-based counts of decoder layers already run when a drop happens (``[16]`` drops
    after the 16th layer, so layer index 16 is the first to see the shorter sequence); ``image_token_list``
    the visual tokens per image kept by each drop. ``visual_token_num`` (optional) is the encoder stage:
    tokens per image kept before the first decoder layer. A count above the tokens available keeps them all.
    """

    layer_list: tuple[int, ...] = ()
    image_token_list: tuple[int, ...] = ()
    visual_token_num: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_list", _as_int_tuple(self.layer_list, "layer_list"))
        object.__setattr__(self, "image_token_list", _as_int_tuple(self.image_token_list, "image_token_list"))
        if self.visual_token_num is not None and (
            isinstance(self.visual_token_num, bool) or not isinstance(self.visual_token_num, int)
        ):
            raise ValueError(f"visual_token_num must be an integer or None, got {self.visual_token_num!r}")
        self.validate()

    def validate(self, num_layers: int | None = None) -> None:
        """Raise ``ValueError`` naming the problem if the schedule is malformed (or does not fit the model)."""
        layers, counts = self.layer_list, self.image_token_list
        if len(layers) != len(counts):
            raise ValueError(
                f"layer_list {list(layers)} and image_token_list {list(counts)} must have the same length "
                f"({len(layers)} != {len(counts)})"
            )
        if any(b <= a for a, b in zip(layers, layers[1:])):
            raise ValueError(f"layer_list must be strictly increasing, got {list(layers)}")
        if any(layer < 1 for layer in layers):
            raise ValueError(
                f"layer_list entries count layers already run and must be >= 1, got {list(layers)}"
            )
        if num_layers is not None and layers and layers[-1] >= num_layers:
            raise ValueError(
                f"layer_list entry {layers[-1]} is out of range for a model with {num_layers} decoder layers "
                f"(a drop after layer L needs a layer L+1 to follow, so entries must be <= {num_layers - 1})"
            )
        if self.visual_token_num is not None and self.visual_token_num < 1:
            raise ValueError(f"visual_token_num must be >= 1, got {self.visual_token_num}")
        if any(c < 1 for c in counts):
            raise ValueError(f"image_token_list counts must be >= 1, got {list(counts)}")
        full = ([self.visual_token_num] if self.visual_token_num is not None else []) + list(counts)
        if any(b > a for a, b in zip(full, full[1:])):
            raise ValueError(
                f"token counts must be non-increasing from stage to stage, got {full} "
                "(visual_token_num first, then image_token_list)"
            )

    @property
    def has_encoder_stage(self) -> bool:
        return self.visual_token_num is not None

    def stage_at_layer(self, layer_index: int) -> int | None:
        """The position in ``layer_list`` of the drop that happens before 0-based ``layer_index``, if any."""
        try:
            return self.layer_list.index(layer_index)
        except ValueError:
            return None

    def average_tokens(self, num_layers: int, num_visual: int) -> float:
        """Average visual tokens per decoder layer (the budget the paper reports), for one image."""
        current = min(self.visual_token_num, num_visual) if self.visual_token_num is not None else num_visual
        total, prev = 0, 0
        for layer, count in zip(self.layer_list, self.image_token_list):
            total += current * (layer - prev)
            prev, current = layer, min(count, current)
        total += current * (num_layers - prev)
        return total / num_layers
