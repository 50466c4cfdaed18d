"""Compose two methods: the encoder stage of one, the LLM stages of another (e.g. VisionZip, then TRIO)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from trio_vlm.contract import Selection, Stage, StageContext
from trio_vlm.methods.base import TokenMethod, check_choice
from trio_vlm.schedule import Schedule


@dataclass(frozen=True)
class Compose(TokenMethod):
    """``encoder``'s encoder stage followed by ``llm``'s LLM stages, as one method.

    Only ``encoder``'s encoder stage and ``llm``'s LLM stages are used; the merged schedule must be valid
    (every LLM count at most the encoder count). ``position_mode`` overrides the position convention, else
    ``llm``'s, else ``encoder``'s, else the family's.
    """

    encoder: TokenMethod
    llm: TokenMethod
    position_mode: str | None = None

    display_name: ClassVar[str] = "compose"
    modes: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for role, method in (("encoder", self.encoder), ("llm", self.llm)):
            if not isinstance(method, TokenMethod):
                raise ValueError(f"Compose {role} must be a trio_vlm method, got {type(method).__name__}")
        if not self.encoder.schedule().has_encoder_stage:
            raise ValueError(f"Compose: the encoder method {self.encoder.name!r} has no encoder stage")
        if not self.llm.schedule().layer_list:
            raise ValueError(f"Compose: the LLM method {self.llm.name!r} has no LLM stages")
        check_choice("position_mode", self.position_mode, (None, "compact", "original"))
        try:
            self.schedule()
        except ValueError as exc:
            raise ValueError(f"Compose({self.encoder.name}, {self.llm.name}): {exc}") from exc

    @property
    def name(self) -> str:  # type: ignore[override]
        """``encoder+llm``, e.g. ``visionzip+trio`` (Compose is built, never looked up by name)."""
        return f"{self.encoder.name}+{self.llm.name}"

    def schedule(self) -> Schedule:
        enc, llm = self.encoder.schedule(), self.llm.schedule()
        return Schedule(
            layer_list=llm.layer_list,
            image_token_list=llm.image_token_list,
            visual_token_num=enc.visual_token_num,
            image_token_ratio=enc.image_token_ratio,
            image_token_ratio_list=llm.image_token_ratio_list,
        )

    def with_schedule(self, schedule: Schedule) -> Compose:
        encoder = Schedule(
            visual_token_num=schedule.visual_token_num, image_token_ratio=schedule.image_token_ratio
        )
        llm = dataclasses.replace(schedule, visual_token_num=None, image_token_ratio=None)
        return dataclasses.replace(
            self, encoder=self.encoder.with_schedule(encoder), llm=self.llm.with_schedule(llm)
        )

    def position_convention(self) -> str | None:
        for mode in (self.position_mode, self.llm.position_convention(), self.encoder.position_convention()):
            if mode is not None:
                return mode
        return None

    def stage_output(self, stage: Stage, keep: int, available: int) -> int:
        return (self.encoder if stage.is_encoder else self.llm).stage_output(stage, keep, available)

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "encoder": self.encoder.describe(), "llm": self.llm.describe()}

    def cls_attention_layers(self) -> tuple[int, ...]:
        return self.encoder.cls_attention_layers()

    def vision_layer_inputs(self) -> tuple[int, ...]:
        return self.encoder.vision_layer_inputs()

    def causal_after_drop(self, family: str) -> bool:
        return self.llm.causal_after_drop(family)

    def select(self, ctx: StageContext) -> Selection:
        return (self.encoder if ctx.stage.is_encoder else self.llm).select(ctx)
