"""Where a method drops tokens: an optional encoder stage and LLM stages after given decoder layers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: The fields of a :class:`Schedule`; a method's dataclass fields of these names say where it acts.
SCHEDULE_FIELDS = (
    "layer_list",
    "image_token_list",
    "visual_token_num",
    "image_token_ratio",
    "image_token_ratio_list",
)


def _as_ratio(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {value}")
    return float(value)


def _as_ratio_tuple(values: Sequence[float] | None, name: str) -> tuple[float, ...]:
    if values is None:
        return ()
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name} must be a list of numbers, got the string {values!r}")
    return tuple(_as_ratio(v, f"{name} entry") for v in values)


def keep_fraction(ratio: float, available: int) -> int:
    """Tokens kept when a stage keeps ``ratio`` of ``available``: ``int(ratio · available)`` as the Qwen2.5-VL
    reference computes it, at least 1 and at most ``available``."""
    return max(1, min(available, int(ratio * available)))


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

    For models whose images have a variable number of tokens (Qwen2.5-VL, LLaVA-NeXT) the counts may be
    fractions instead: ``image_token_ratio`` (encoder stage: that fraction of each image's tokens) and
    ``image_token_ratio_list`` (each LLM drop keeps that fraction of the tokens it receives), resolved per
    image as ``int(ratio · tokens)`` (at least 1) — the reference arithmetic. Counts and fractions are
    exclusive per kind of stage.
    """

    layer_list: tuple[int, ...] = ()
    image_token_list: tuple[int, ...] = ()
    visual_token_num: int | None = None
    image_token_ratio: float | None = None
    image_token_ratio_list: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_list", _as_int_tuple(self.layer_list, "layer_list"))
        object.__setattr__(self, "image_token_list", _as_int_tuple(self.image_token_list, "image_token_list"))
        object.__setattr__(self, "image_token_ratio", _as_ratio(self.image_token_ratio, "image_token_ratio"))
        object.__setattr__(
            self,
            "image_token_ratio_list",
            _as_ratio_tuple(self.image_token_ratio_list, "image_token_ratio_list"),
        )
        if self.visual_token_num is not None and (
            isinstance(self.visual_token_num, bool) or not isinstance(self.visual_token_num, int)
        ):
            raise ValueError(f"visual_token_num must be an integer or None, got {self.visual_token_num!r}")
        self.validate()

    def validate(self, num_layers: int | None = None) -> None:
        """Raise ``ValueError`` naming the problem if the schedule is malformed (or does not fit the model)."""
        layers, counts = self.layer_list, self.image_token_list
        if self.image_token_ratio_list:
            if counts:
                raise ValueError(
                    f"give LLM-stage counts either as image_token_list {list(counts)} or as image_token_ratio_list "
                    f"{list(self.image_token_ratio_list)}, not both"
                )
            if len(layers) != len(self.image_token_ratio_list):
                raise ValueError(
                    f"layer_list {list(layers)} and image_token_ratio_list {list(self.image_token_ratio_list)} "
                    f"must have the same length ({len(layers)} != {len(self.image_token_ratio_list)})"
                )
        elif len(layers) != len(counts):
            raise ValueError(
                f"layer_list {list(layers)} and image_token_list {list(counts)} must have the same length "
                f"({len(layers)} != {len(counts)})"
            )
        if self.visual_token_num is not None and self.image_token_ratio is not None:
            raise ValueError(
                f"give the encoder stage either as visual_token_num ({self.visual_token_num}) or as "
                f"image_token_ratio ({self.image_token_ratio}), not both"
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
        if self.image_token_ratio is not None and counts:
            full = list(counts)  # absolute LLM counts after a fractional encoder stage: checked per image
        if any(b > a for a, b in zip(full, full[1:])):
            raise ValueError(
                f"token counts must be non-increasing from stage to stage, got {full} "
                "(visual_token_num first, then image_token_list)"
            )

    @property
    def has_encoder_stage(self) -> bool:
        return self.visual_token_num is not None or self.image_token_ratio is not None

    @property
    def uses_ratios(self) -> bool:
        """Whether any stage keeps a fraction rather than a count."""
        return self.image_token_ratio is not None or bool(self.image_token_ratio_list)

    def encoder_keep(self, available: int) -> int:
        """Tokens of an image with ``available`` tokens kept by the encoder stage."""
        if self.image_token_ratio is not None:
            return keep_fraction(self.image_token_ratio, available)
        if self.visual_token_num is None:
            return available
        return min(self.visual_token_num, available)

    def llm_keep(self, stage: int, available: int) -> int:
        """Tokens of an image with ``available`` tokens kept by the ``stage``-th LLM drop."""
        if self.image_token_ratio_list:
            return keep_fraction(self.image_token_ratio_list[stage], available)
        return min(self.image_token_list[stage], available)

    def stage_at_layer(self, layer_index: int) -> int | None:
        """The position in ``layer_list`` of the drop that happens before 0-based ``layer_index``, if any."""
        try:
            return self.layer_list.index(layer_index)
        except ValueError:
            return None
