"""Every baseline, with its default options, against an independent transcription of its official code.

At two budgets each: the original visual indices kept at every stage, the sequence entering the layer after
every stage (for encoder-side methods: the features entering the LLM), the prefill logits and three greedy
decode steps (``generate`` with its cache against full recomputation). References: tests/official_reference.py.
"""

from __future__ import annotations

import pytest
import torch
from helpers import prompt_embeds
from official_reference import (
    Plan,
    dart_official,
    fastv_official,
    greedy,
    holov_official,
    pdrop_official,
    replay,
    scope_official,
    sparsevlm_official,
    visionzip_official,
)

import trio_vlm
from trio_vlm.testing.tiny import tiny_inputs

STEPS = 3


def run_method(model, x, method, layers: list[int]):
    """(call-0 events, the sequence entering each of ``layers`` after its stage, prefill logits, decoded ids)."""
    entering: dict[int, torch.Tensor] = {}

    def grab(index):
        def hook(module, args, kwargs):
            entering.setdefault(index, (args[0] if args else kwargs["hidden_states"]).detach().clone())

        return hook

    decoder = model.model.language_model.layers
    with torch.no_grad(), trio_vlm.apply(model, method) as run:
        handles = [decoder[i].register_forward_pre_hook(grab(i), with_kwargs=True) for i in layers]
        try:
            logits = model(**x).logits
        finally:
            for handle in handles:
                handle.remove()
        ids = model.generate(**x, max_new_tokens=STEPS, do_sample=False)
    events = [e for e in run.events if e.call == 0]
    return events, [entering[i] for i in layers], logits, ids[0, x["input_ids"].shape[1] :].tolist()


def check_against(model, x, method, plan: Plan, score_scale: float | None = 1.0) -> None:
    layers = [stage.layer for stage in plan.stages]
    events, entering, logits, decoded = run_method(model, x, method, layers)
    with torch.no_grad():
        want_logits, want_entering = replay(model, prompt_embeds(model, x), plan)
        want_decoded = greedy(model, x, plan, STEPS)
    assert [e.kept[0].tolist() for e in events] == [stage.kept for stage in plan.stages]
    for event, stage in zip(events, plan.stages):
        if score_scale is not None:
            torch.testing.assert_close(
                event.scores[0] * score_scale, stage.scores.float(), rtol=1e-4, atol=1e-6
            )
    for got, want in zip(entering, want_entering, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert logits.shape == want_logits.shape
    torch.testing.assert_close(logits, want_logits, rtol=1e-4, atol=1e-4)
    assert decoded == want_decoded


# ---- LLM side ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("k", "keep"), [(2, 40), (3, 20)])
def test_fastv_equals_official(tiny, tiny_eager, k, keep):
    x = tiny_inputs(tiny, seed=31)
    with torch.no_grad():
        plan = fastv_official(tiny, tiny_eager, x, k, keep)
    check_against(tiny, x, trio_vlm.FastV(layer_list=[k], image_token_list=[keep]), plan)


@pytest.mark.parametrize(("layers", "counts"), [((1, 3), (50, 15)), ((2, 4), (90, 30))])
def test_pdrop_equals_official(tiny, tiny_eager, layers, counts):
    x = tiny_inputs(tiny, seed=32)
    with torch.no_grad():
        plan = pdrop_official(tiny, tiny_eager, x, layers, counts)
    check_against(tiny, x, trio_vlm.PDrop(layer_list=layers, image_token_list=counts), plan)


@pytest.mark.parametrize(
    ("layers", "counts"),
    [((2, 4), (60, 20)), ((2, 3, 5), (90, 40, 12)), ((1, 2, 3), (1, 1, 1))],
    ids=["two-stages", "three-stages", "only-clusters-left"],  # the last stage ranks created tokens only
)
def test_sparsevlm_equals_official(tiny, tiny_eager, layers, counts):
    x = tiny_inputs(tiny, seed=33, suffix=9)
    with torch.no_grad():
        plan = sparsevlm_official(tiny, tiny_eager, x, layers, counts)
    method = trio_vlm.SparseVLM(layer_list=layers, image_token_list=counts)
    check_against(tiny, x, method, plan)
    # each drop keeps its count plus the appended clusters, as the plan (and the measured average) says
    sizes = [len(stage.kept) for stage in plan.stages]
    assert sizes == [method.tokens_per_layer(6, 144)[layer] for layer in layers]
    assert all(size > count for size, count in zip(sizes, counts))


@pytest.mark.parametrize(("k", "keep"), [(2, 30), (3, 64)])
def test_dart_equals_official(tiny, k, keep):
    x = tiny_inputs(tiny, seed=34)
    with torch.no_grad():
        plan = dart_official(tiny, x, k, keep)
    groups = tiny.model.language_model.layers[k - 1].self_attn.num_key_value_groups
    method = trio_vlm.DART(layer_list=[k], image_token_list=[keep], exact_budget=False)
    check_against(tiny, x, method, plan, score_scale=groups)  # GQA keys are not repeated: norms / groups
    assert len(plan.stages[0].kept) == method.tokens_per_layer(6, 144)[k] == 4 + 8 * (keep // 8)


def test_dart_exact_budget_equals_official_with_spread_quotas(tiny):
    x = tiny_inputs(tiny, seed=34)
    with torch.no_grad():
        plan = dart_official(tiny, x, 2, 30, exact=True)
    groups = tiny.model.language_model.layers[1].self_attn.num_key_value_groups
    check_against(tiny, x, trio_vlm.DART(layer_list=[2], image_token_list=[30]), plan, score_scale=groups)
    assert len(plan.stages[0].kept) == 30


# ---- encoder side -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("keep", "contextual"), [(40, None), (64, 10)])
def test_visionzip_equals_official(tiny, tiny_eager, keep, contextual):
    x = tiny_inputs(tiny, seed=35)
    method = trio_vlm.VisionZip(visual_token_num=keep, contextual=contextual)
    n_ctx = method.contextual_count(keep)
    with torch.no_grad():
        plan = visionzip_official(tiny, tiny_eager, x, keep - n_ctx, n_ctx)
    heads = tiny.config.vision_config.num_attention_heads
    check_against(tiny, x, method, plan, score_scale=heads)  # the engine's [CLS] row is the head mean
    assert len(plan.stages[0].kept) == keep and plan.stages[0].kept[-1] == 144  # [CLS], a created token


@pytest.mark.parametrize(("keep", "crops"), [(16, None), (120, 16)])
def test_holov_equals_official(tiny, tiny_eager, keep, crops):
    x = tiny_inputs(tiny, seed=23)
    method = trio_vlm.HoloV(visual_token_num=keep, crops=crops)
    with torch.no_grad():
        plan = holov_official(tiny, tiny_eager, x, keep, method.crops_for(144, keep))
    check_against(tiny, x, method, plan)
    padded = [i for i in plan.stages[0].kept if i >= 144]
    assert bool(padded) == (keep == 120)  # 16 crops of 9 cannot take 120 in proportion: zero vectors fill in


@pytest.mark.parametrize("keep", [24, 50])
def test_scope_equals_official(tiny, tiny_eager, keep):
    x = tiny_inputs(tiny, seed=36)
    with torch.no_grad():
        plan = scope_official(tiny, tiny_eager, x, keep)
    check_against(tiny, x, trio_vlm.SCOPE(visual_token_num=keep), plan, score_scale=None)
