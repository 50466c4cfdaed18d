"""Compose two methods: the encoder stage of one, the LLM stages of another (e.g. VisionZip, then TRIO)."""

from __future__ import annotations

from dataclasses import dataclass

from trio_vlm.methods.base import Selection, StageContext, TokenMethod
from trio_vlm.schedule import Schedule


@dataclass
class Compose(TokenMethod):
    """``encoder``'s encoder stage followed by ``llm``'s LLM stages, as one method.

    Only ``encoder``'s ``visual_token_num`` and ``llm``'s ``layer_list``/``image_token_list`` are used (an LLM
    stage of ``encoder`` or an encoder stage of ``llm`` is ignored); the merged schedule must be valid, i.e.
    every LLM count at most the encoder count. ``positions`` overrides the position convention, else ``llm``'s,
    else ``encoder``'s, else the family's.
    """

    encoder: TokenMethod
    llm: TokenMethod
    positions: str | None = None

    def __post_init__(self) -> None:
        for role, method in (("encoder", self.encoder), ("llm", self.llm)):
            if not isinstance(method, TokenMethod):
                raise ValueError(f"Compose {role} must be a trio_vlm method, got {type(method).__name__}")
        enc, llm = self.encoder.schedule(), self.llm.schedule()
        if not enc.has_encoder_stage:
            raise ValueError(f"Compose: the encoder method {self.encoder.name!r} has no encoder stage")
        if not llm.layer_list:
            raise ValueError(f"Compose: the LLM method {self.llm.name!r} has no LLM stages")
        try:
            self._schedule = Schedule(llm.layer_list, llm.image_token_list, enc.visual_token_num)
        except ValueError as exc:
            raise ValueError(f"Compose({self.encoder.name}, {self.llm.name}): {exc}") from exc
        if self.positions not in (None, "compact", "original"):
            raise ValueError(f"positions must be None, 'compact' or 'original', got {self.positions!r}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.encoder.name}+{self.llm.name}"

    @property
    def position_mode(self) -> str | None:
        for mode in (self.positions, self.llm.position_mode, self.encoder.position_mode):
            if mode is not None:
                return mode
        return None

    def cls_attention_layers(self) -> tuple[int, ...]:
        return self.encoder.cls_attention_layers()

    def vision_layer_inputs(self) -> tuple[int, ...]:
        return self.encoder.vision_layer_inputs()

    def select(self, ctx: StageContext) -> Selection:
        return (self.encoder if ctx.stage == "encoder" else self.llm).select(ctx)
