"""docs/adding_a_method.md, followed once: a trivial method written in one class, registered with one line,
given one test-table cell — and then usable everywhere (API, presets, the CLI, the support table)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import test_families
import torch
from method_table import FAMILIES, METHOD_TABLE, Cell

import trio_vlm
from trio_vlm.cli.main import main
from trio_vlm.contract import Selection, StageContext
from trio_vlm.methods.base import LLMStages, check_int
from trio_vlm.methods.fastv import single_drop_config
from trio_vlm.methods.registry import available_methods, unregister
from trio_vlm.presets import ModelShape


@dataclass(frozen=True, kw_only=True)
class KeepFirst(LLMStages):
    """Keep the first ``image_token_list[i]`` tokens of every image at each drop (after ``offset``)."""

    layer_list: tuple[int, ...] = (2,)
    image_token_list: tuple[int, ...] = (64,)
    offset: int = 0
    position_mode: str | None = None

    name: ClassVar[str] = "keep_first"
    display_name: ClassVar[str] = "KeepFirst"
    table_order: ClassVar[int] = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("offset", self.offset, low=0)

    @classmethod
    def reference_config(cls, family: str, budget: int, mode: str | None) -> dict[str, Any]:
        return single_drop_config(family, budget, layer=2)

    def select(self, ctx: StageContext) -> Selection:
        kept, scores = [], []
        for g in ctx.groups:
            start = min(self.offset, g.size - g.keep)
            kept.append(torch.arange(start, start + g.keep, device=g.seq_index.device))
            scores.append(-torch.arange(g.size, dtype=torch.float32, device=g.seq_index.device))
        return Selection(kept=kept, scores=scores)


@pytest.fixture
def registered(monkeypatch):
    trio_vlm.register(KeepFirst)  # step 2: one registry line
    monkeypatch.setitem(
        METHOD_TABLE, "keep_first", Cell(lambda: KeepFirst(layer_list=(2,), image_token_list=(10,)))
    )
    try:
        yield KeepFirst
    finally:
        unregister("keep_first")


def test_the_method_works_through_every_entry_point(registered, tmp_path, monkeypatch, capsys):
    assert "keep_first" in available_methods()
    with pytest.raises(ValueError, match="offset must lie in 0.."):
        KeepFirst(offset=-1)
    # presets: the one rule fits it to any model
    tiny = ModelShape("llava-1.5", 6, 144, 144)
    assert KeepFirst.preset("llava-1.5", 64).image_token_list == (30,)  # averages 64.125 on 32 layers
    assert trio_vlm.build_method("keep_first", tiny, 128).average_tokens(6, 144) == pytest.approx(
        KeepFirst.preset(tiny, 128).average_tokens(6, 144)
    )
    # step 3: its cell runs the support-table check on every family
    models = test_families.tiny_family_models(seed=0)
    for family in FAMILIES:
        test_families.test_method_runs_on_family("keep_first", family, models)
    # the CLI picks it up by name, with a budget fitted to the bundled model, and keeps what it says
    monkeypatch.setenv("TRIO_VLM_CACHE", str(tmp_path))
    argv = ["answer", "--method", "keep_first", "--budget", "128", "--max-new-tokens", "2", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    expected = KeepFirst.preset(tiny, 128)
    assert out["method"]["image_token_list"] == list(expected.image_token_list)
    assert [(s["stage"], s["after"]) for s in out["visual_tokens"]] == [
        (expected.layer_list[0], expected.image_token_list[0])
    ]
    assert out["avg_visual_tokens"] == pytest.approx(expected.average_tokens(6, 144))
    with (
        torch.no_grad(),
        trio_vlm.apply(models["llava-1.5"], KeepFirst(image_token_list=(10,), offset=3)) as run,
    ):
        models["llava-1.5"](**test_families.tiny_inputs(models["llava-1.5"], seed=1))
    assert run.events[0].kept[0].tolist() == list(range(3, 13))
