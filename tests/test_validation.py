"""Bad schedules and inputs fail loudly with a message naming the problem."""

import pytest
import torch
from torch import nn

import trio_vlm
from trio_vlm.testing.tiny import tiny_inputs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer_list": [3, 2], "image_token_list": [40, 20]}, "strictly increasing"),
        ({"layer_list": [2, 2], "image_token_list": [40, 20]}, "strictly increasing"),
        ({"layer_list": [0], "image_token_list": [40]}, ">= 1"),
        ({"layer_list": [2], "image_token_list": [0]}, "counts must be >= 1"),
        ({"layer_list": [2, 4], "image_token_list": [40]}, "same length"),
        ({"layer_list": [2, 4], "image_token_list": [20, 40]}, "non-increasing"),
        ({"layer_list": [2], "image_token_list": [40], "visual_token_num": 0}, "visual_token_num"),
        ({"layer_list": [2], "image_token_list": [40], "visual_token_num": 30}, "non-increasing"),
        ({"layer_list": "[2]", "image_token_list": [40]}, "must be a list"),
        ({"layer_list": [2.5], "image_token_list": [40]}, "integers"),
        ({"probe": "slow"}, "probe"),
        ({"tau": 1.5}, "tau"),
        ({"position_mode": "shifted"}, "position_mode"),
    ],
)
def test_bad_schedule_raises_value_error_naming_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        trio_vlm.TRIO(**kwargs)


def test_layer_out_of_range_for_the_model(tiny):
    n = tiny.config.text_config.num_hidden_layers
    with (
        pytest.raises(ValueError, match="out of range"),
        trio_vlm.apply(tiny, trio_vlm.TRIO(layer_list=[n], image_token_list=[10])),
    ):
        pass
    with (
        pytest.raises(ValueError, match="out of range"),
        trio_vlm.apply(tiny, trio_vlm.TRIO.preset("llava-1.5", 64)),
    ):
        pass


def test_prompt_without_image_tokens(tiny):
    x = tiny_inputs(tiny)
    ids = torch.randint(4, 90, x["input_ids"].shape)
    with (
        pytest.raises(ValueError, match="no image tokens"),
        torch.no_grad(),
        trio_vlm.apply(tiny, trio_vlm.TRIO(layer_list=[2], image_token_list=[10])),
    ):
        tiny(input_ids=ids)


def test_unsupported_model_and_method():
    with (
        pytest.raises(ValueError, match="unsupported model architecture 'Linear'"),
        trio_vlm.apply(nn.Linear(2, 2), trio_vlm.TRIO()),
    ):
        pass


def test_not_a_method(tiny):
    with pytest.raises(TypeError, match="trio_vlm method"), trio_vlm.apply(tiny, {"layer_list": [2]}):
        pass


def test_encoder_stage_needs_a_grid_the_window_divides(tiny):
    x = tiny_inputs(tiny)
    with (
        pytest.raises(ValueError, match="not divisible by the window"),
        torch.no_grad(),
        trio_vlm.apply(
            tiny, trio_vlm.TRIO(layer_list=[], image_token_list=[], visual_token_num=20, window=5)
        ),
    ):
        tiny(**x)


def test_presets_have_the_documented_average_budget():
    for budget in (64, 128, 192):
        for mode in ("wo_ve", "w_ve"):
            method = trio_vlm.TRIO.preset("llava-1.5", budget=budget, mode=mode)
            assert method.average_tokens(num_layers=32, num_visual=576) == budget
    m = trio_vlm.TRIO.preset("llava-1.5", budget=64, mode="w_ve")
    assert (m.visual_token_num, m.layer_list, m.image_token_list) == (96, (16,), (32,))
    # an unpublished budget: the nearest published schedule's shape (128), counts fitted to 100 exactly
    other = trio_vlm.TRIO.preset("llava-1.5", budget=100)
    assert other.layer_list == (1, 10, 15) and other.average_tokens(32, 576) == 100
    with pytest.raises(
        ValueError, match="no TRIO preset for gemma budget=64 mode=w_ve; published: llava-1.5"
    ):
        trio_vlm.TRIO.reference_config("gemma", 64, "w_ve")


def test_tokens_per_stage_and_event_fields(tiny):
    x = tiny_inputs(tiny, batch=2, seed=21)
    method = trio_vlm.TRIO(layer_list=[1, 3], image_token_list=[50, 20], visual_token_num=100, window=6)
    with torch.no_grad(), trio_vlm.apply(tiny, method) as run:
        tiny.generate(**x, max_new_tokens=3, do_sample=False)
    assert [e.stage.key for e in run.events] == ["encoder", 1, 3]
    assert [e.layer_index for e in run.events] == [0, 1, 3]
    # the reference arithmetic: local half int(100*0.5)=50 → 12 per window × 4 windows = 48, plus 50 global
    assert run.tokens_per_stage() == {"encoder": 98, 1: 50, 3: 20}
    # the plan knows the quota arithmetic: measured and planned averages agree
    assert run.average_tokens() == method.average_tokens(6, 144) == (98 + 2 * 50 + 3 * 20) / 6
    assert len(run.prefill_seconds) == 1 and run.prefill_seconds[0] > 0
    for e in run.events:
        for cand, kept, score in zip(e.candidates, e.kept, e.scores):
            assert set(kept.tolist()) <= set(cand.tolist())
            assert torch.equal(kept, torch.sort(kept).values)
            assert score.shape == cand.shape
