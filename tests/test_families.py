"""Support table: every registered method on a tiny model of every supported family (docs/families.md).

Each cell runs a prefill and a short generation on a batch of two prompts whose images differ in size, and
checks what was kept; a cell marked not applicable must fail with a clear ValueError naming the reason.
"""

from __future__ import annotations

import pytest
import torch

import trio_vlm
from trio_vlm.adapters import adapter_for
from trio_vlm.methods.dart import DART
from trio_vlm.methods.fastv import FastV
from trio_vlm.methods.fixed import Vanilla
from trio_vlm.methods.holov import HoloV
from trio_vlm.methods.pdrop import PDrop
from trio_vlm.methods.registry import available_methods
from trio_vlm.methods.sanity import Random, Uniform
from trio_vlm.methods.scope import SCOPE
from trio_vlm.methods.sparsevlm import SparseVLM
from trio_vlm.methods.visionzip import VisionZip
from trio_vlm.testing.tiny import tiny_inputs, tiny_llava
from trio_vlm.testing.tiny_families import (
    next_inputs,
    next_token_counts,
    qwen_inputs,
    tiny_llava_next,
    tiny_qwen25_vl,
)

FAMILIES = ("llava-1.5", "llava-next", "qwen2.5-vl")
# Encoder-stage TRIO settings that fit each tiny tower: vision layers, window on the (tile) grid, rule.
TRIO_ENCODER = {
    "llava-1.5": {"shallow_layer": 5, "deep_layer": -2, "window": 6},
    "llava-next": {"shallow_layer": 1, "deep_layer": -2, "window": 4},
    "qwen2.5-vl": {"shallow_layer": 1, "deep_layer": -1, "window": 2, "window_rule": "capped"},
}
NOT_APPLICABLE = {
    ("visionzip", "qwen2.5-vl"): "reads CLIP vision-layer inputs",
    ("scope", "qwen2.5-vl"): "reads CLIP vision-layer inputs",
}


def _method(name: str, family: str):
    """(method, exact) — ``exact``: every image keeps exactly its scheduled count at every stage."""
    table = {
        "trio": (lambda: trio_vlm.TRIO(layer_list=[2, 4], image_token_list=[16, 8]), True),
        "fastv": (lambda: FastV(layer_list=(2,), image_token_list=(12,)), True),
        "pdrop": (lambda: PDrop(layer_list=(1, 3, 4), image_token_list=(20, 12, 6)), True),
        "sparsevlm": (lambda: SparseVLM(layer_list=(2, 4), image_token_list=(16, 8)), False),
        "dart": (lambda: DART(layer_list=(2,), image_token_list=(16,)), True),
        "random": (lambda: Random(visual_token_num=14, layer_list=(3,), image_token_list=(6,), seed=3), True),
        "uniform": (lambda: Uniform(visual_token_num=14), True),
        "visionzip": (lambda: VisionZip(visual_token_num=16), True),
        "holov": (lambda: HoloV(visual_token_num=16), True),
        "scope": (lambda: SCOPE(visual_token_num=16), True),
        "vanilla": (lambda: Vanilla(), True),
    }
    if name not in table:
        raise AssertionError(f"method {name!r} is registered but has no cell in the support table test")
    factory, exact = table[name]
    return factory(), exact


@pytest.fixture(scope="module")
def family_models():
    return {
        "llava-1.5": tiny_llava(seed=0),
        "llava-next": tiny_llava_next(seed=0),
        "qwen2.5-vl": tiny_qwen25_vl(seed=0),
    }


def _inputs(family: str, model) -> dict[str, torch.Tensor]:
    if family == "llava-1.5":
        return tiny_inputs(model, batch=2, seed=4)
    if family == "llava-next":
        return next_inputs(model, image_sizes=NEXT_SIZES, seed=4)
    return qwen_inputs(model, images=[[(8, 12)], [(12, 16)]], videos=[[], [(4, 8, 8)]], seed=4)


def _expected(schedule, sizes: list[int]) -> list[list[int]]:
    """Per stage (encoder first), the tokens one sample keeps: the sum over its images of the schedule."""
    out = []
    current = list(sizes)
    if schedule.has_encoder_stage:
        current = [schedule.encoder_keep(n) for n in current]
        out.append(sum(current))
    for stage in range(len(schedule.layer_list)):
        current = [schedule.llm_keep(stage, n) for n in current]
        out.append(sum(current))
    return out


def test_every_registered_method_has_a_cell():
    for name in available_methods():
        for family in FAMILIES:
            if (name, family) not in NOT_APPLICABLE:
                _method(name, family)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", available_methods())
def test_method_runs_on_family(name, family, family_models):
    model = family_models[family]
    x = _inputs(family, model)
    method, exact = _method(name, family)
    if (name, family) in NOT_APPLICABLE:
        with pytest.raises(ValueError, match=NOT_APPLICABLE[(name, family)]), trio_vlm.apply(model, method):
            pass
        return
    with torch.no_grad(), trio_vlm.apply(model, method) as run:
        logits = model(**x).logits
        ids = model.generate(**x, max_new_tokens=2, do_sample=False)
    assert torch.isfinite(logits).all()
    assert ids.shape == (2, x["input_ids"].shape[1] + 2)
    schedule = method.schedule()
    n_stages = int(schedule.has_encoder_stage) + len(schedule.layer_list)
    calls = sorted({e.call for e in run.events})
    assert len(calls) == (2 if n_stages else 0)
    for call in calls:
        events = [e for e in run.events if e.call == call]
        assert len(events) == n_stages
        for b in range(2):
            before = events[0].tokens_before[b]
            sizes = _image_sizes(model, x, b, before)
            kept = [e.tokens_after[b] for e in events]
            if exact:
                assert kept == _expected(schedule, sizes)
            else:
                assert all(0 < k <= n for k, n in zip(kept, [before, *kept]))
            for e in events:
                assert set(e.kept[b].tolist()) <= set(e.candidates[b].tolist())
    # The stage that runs first drops tokens of every image of every sample.
    if n_stages:
        first = [e for e in run.events if e.call == calls[0]][0]
        assert all(a < b for a, b in zip(first.tokens_after, first.tokens_before))


NEXT_SIZES = [[(20, 40)], [(16, 16)]]


_NEXT_COUNTS: dict[tuple[int, int], int] = {}


def _next_patch_tokens(model, size: tuple[int, int]) -> int:
    if size not in _NEXT_COUNTS:
        _NEXT_COUNTS[size] = next_token_counts(model, size)[0]
    return _NEXT_COUNTS[size]


def _image_sizes(model, x, b: int, total: int) -> list[int]:
    """Prunable tokens per image/video of sample ``b`` (LLaVA-NeXT's row newlines excluded)."""
    adapter = adapter_for(model)
    kinds = adapter.visual_kinds(x["input_ids"], None)[b]
    if adapter.family == "llava-next":
        sizes = [_next_patch_tokens(model, size) for size in NEXT_SIZES[b]]
    elif adapter.family == "qwen2.5-vl":
        changes = (kinds[1:] != kinds[:-1]).nonzero().flatten() + 1
        sizes = [int(run.numel()) for run in torch.tensor_split(kinds, changes) if int(run[0]) > 0]
    else:
        n = model.config.image_seq_length
        sizes = [n] * (int((kinds > 0).sum()) // n)
    assert sum(sizes) == total
    return sizes


@pytest.mark.parametrize("family", ["llava-next", "qwen2.5-vl"])
def test_trio_encoder_stage_on_family(family, family_models):
    model = family_models[family]
    x = _inputs(family, model)
    method = trio_vlm.TRIO(
        layer_list=[3],
        image_token_list=(),
        image_token_ratio=0.5,
        image_token_ratio_list=[0.5],
        **TRIO_ENCODER[family],
    )
    with torch.no_grad(), trio_vlm.apply(model, method) as run:
        model.generate(**x, max_new_tokens=2, do_sample=False)
    encoder = run.events[0]
    assert encoder.stage == "encoder"
    for b in range(2):
        sizes = _image_sizes(model, x, b, encoder.tokens_before[b])
        keep = [max(1, int(0.5 * n)) for n in sizes]
        if family == "qwen2.5-vl":  # the capped rule keeps the budget exactly
            assert encoder.tokens_after[b] == sum(keep)
        else:  # per tile, under the quota rule's arithmetic: at most the budget
            assert 0 < encoder.tokens_after[b] <= sum(keep)
        assert run.events[1].tokens_after[b] == sum(
            max(1, int(0.5 * k)) for k in _per_image_after(encoder, b, sizes)
        )


def _per_image_after(event, b: int, sizes: list[int]) -> list[int]:
    kept = event.kept[b]
    bounds = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()])
    return [int(((kept >= lo) & (kept < hi)).sum()) for lo, hi in zip(bounds[:-1], bounds[1:])]
