"""Support table: every registered method on a tiny model of every supported family (docs/families.md).

Each cell runs a prefill and a short generation on a batch of two prompts whose images differ in size, and
checks what was kept; a cell marked not applicable must fail with a clear ValueError naming the reason.
"""

from __future__ import annotations

import pytest
import torch
from method_table import FAMILIES, cell

import trio_vlm
from trio_vlm.adapters import adapter_for
from trio_vlm.methods.registry import available_methods
from trio_vlm.testing.tiny import tiny_inputs
from trio_vlm.testing.tiny_families import (
    next_inputs,
    next_token_counts,
    qwen_inputs,
    tiny_family_models,
)

# Encoder-stage TRIO settings that fit each tiny tower: vision layers, window on the (tile) grid, rule.
TRIO_ENCODER = {
    "llava-1.5": {"shallow_layer": 5, "deep_layer": -2, "window": 6},
    "llava-next": {"shallow_layer": 1, "deep_layer": -2, "window": 4},
    "qwen2.5-vl": {"shallow_layer": 1, "deep_layer": -1, "window": 2, "window_rule": "capped"},
}


@pytest.fixture(scope="module")
def family_models():
    return tiny_family_models(seed=0)


def _inputs(family: str, model) -> dict[str, torch.Tensor]:
    if family == "llava-1.5":
        return tiny_inputs(model, batch=2, seed=4)
    if family == "llava-next":
        return next_inputs(model, image_sizes=NEXT_SIZES, seed=4)
    return qwen_inputs(model, images=[[(8, 12)], [(12, 16)]], videos=[[], [(4, 8, 8)]], seed=4)


def _expected(method, sizes: list[int]) -> list[list[int]]:
    """Per stage (encoder first), the tokens one sample keeps: the sum over its images of the schedule (and of
    what the method adds, e.g. SparseVLM's merged clusters)."""
    schedule = method.schedule()
    out = []
    current = list(sizes)
    if schedule.has_encoder_stage:
        stage = trio_vlm.Stage.encoder()
        current = [method.stage_output(stage, schedule.encoder_keep(n), n) for n in current]
        out.append(sum(current))
    for i, layer in enumerate(schedule.layer_list):
        stage = trio_vlm.Stage(layer, i)
        current = [method.stage_output(stage, schedule.llm_keep(i, n), n) for n in current]
        out.append(sum(current))
    return out


def test_every_registered_method_has_a_cell():
    for name in available_methods():
        assert set(cell(name).not_applicable) <= set(FAMILIES)
        cell(name).build()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", available_methods())
def test_method_runs_on_family(name, family, family_models):
    model = family_models[family]
    x = _inputs(family, model)
    method, refused = cell(name).build(), cell(name).not_applicable.get(family)
    if refused is not None:
        with pytest.raises(ValueError, match=refused), trio_vlm.apply(model, method):
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
            assert kept == _expected(method, sizes)
            assert run.tokens_per_layer(call, b)[-1] == (kept[-1] if kept else before)
            n_visual = events[0].tokens_before[b]
            for e in events:  # kept: candidates, or tokens the stage created (numbered past the prompt's)
                created = set(e.kept[b].tolist()) - set(e.candidates[b].tolist())
                assert all(i >= n_visual for i in created)
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
    assert encoder.stage.is_encoder
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
