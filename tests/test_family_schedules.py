"""Fraction schedules, family presets, the Qwen2.5-VL window rule, tile budgets, loading and CLI options."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
from transformers import LlamaConfig

import trio_vlm
from trio_vlm.adapters import adapter_for
from trio_vlm.cli.options import add_method_arguments, method_request
from trio_vlm.engine.layout import split_keep
from trio_vlm.loading import check_architecture
from trio_vlm.methods.trio import PUBLISHED
from trio_vlm.methods.window_grid import grid_window_global_select
from trio_vlm.presets import ARCHITECTURES
from trio_vlm.schedule import Schedule
from trio_vlm.testing.tiny_families import tiny_llava_next, tiny_qwen25_vl


def test_ratio_schedule_resolves_like_the_reference():
    s = Schedule(layer_list=(14,), image_token_ratio=0.167, image_token_ratio_list=(0.333,))
    assert s.has_encoder_stage and s.uses_ratios
    assert s.encoder_keep(1296) == int(0.167 * 1296) == 216
    assert s.llm_keep(0, 216) == int(0.333 * 216) == 71
    method = trio_vlm.TRIO(layer_list=(14,), image_token_ratio=0.167, image_token_ratio_list=(0.333,))
    assert method.schedule() == s
    assert method.average_tokens(28, 1296) == pytest.approx((216 * 14 + 71 * 14) / 28)
    assert s.encoder_keep(3) == 1  # never below one token
    counts = Schedule(layer_list=(2,), image_token_list=(50,))
    assert counts.llm_keep(0, 30) == 30 and counts.llm_keep(0, 80) == 50


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer_list": (2,), "image_token_list": (5,), "image_token_ratio_list": (0.5,)}, "not both"),
        ({"layer_list": (2, 4), "image_token_ratio_list": (0.5,)}, "same length"),
        ({"visual_token_num": 10, "image_token_ratio": 0.5}, "not both"),
        ({"image_token_ratio": 1.5}, r"\(0, 1\]"),
        ({"layer_list": (2,), "image_token_ratio_list": (0.0,)}, r"\(0, 1\]"),
        ({"layer_list": (2,), "image_token_ratio_list": "0.5"}, "list of numbers"),
    ],
)
def test_bad_ratio_schedules_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Schedule(**kwargs)


@pytest.mark.parametrize(("family", "layers"), [("qwen2.5-vl", 28), ("llava-next", 32)])
@pytest.mark.parametrize("mode", ["w_ve", "wo_ve"])
@pytest.mark.parametrize("budget", [64, 128, 192])
def test_family_presets_average_to_the_budget_share(family, layers, mode, budget):
    method = trio_vlm.TRIO.preset(family, budget, mode)
    schedule = method.schedule()
    assert schedule.uses_ratios and schedule.has_encoder_stage == (mode == "w_ve")
    tokens = 2880  # a LLaVA-NeXT 2×2 image (~ Qwen2.5-VL at 1344×1344 px)
    share = method.average_tokens(layers, tokens) / tokens
    assert share == pytest.approx(budget / 576, rel=0.06)


def test_qwen_reference_preset():
    method = trio_vlm.TRIO.preset("qwen2.5-vl", 64, "w_ve")
    assert (method.image_token_ratio, method.layer_list, method.image_token_ratio_list) == (
        0.167,
        (14,),
        (0.333,),
    )
    assert (method.shallow_layer, method.deep_layer, method.window, method.window_rule) == (
        7,
        -1,
        4,
        "capped",
    )
    assert method.average_tokens(28, 1296) / 1296 == pytest.approx(0.111, abs=0.001)
    assert set(PUBLISHED) >= {("llava-next", 64, "w_ve"), ("qwen2.5-vl", 192, "wo_ve")}


def _capped_plain(local, global_, height, width, budget, window):
    """The Qwen2.5-VL reference window selection, written as a plain loop (ties broken by index)."""
    n_h, n_w = max(1, height // window), max(1, width // window)
    k_local = budget // 2
    limit = math.ceil(k_local / (n_h * n_w))
    counter, taken = {}, []
    for idx in sorted(range(height * width), key=lambda i: (-float(local[i]), i)):
        x = min((idx // width) // window, n_h - 1)
        y = min((idx % width) // window, n_w - 1)
        if counter.get((x, y), 0) < limit:
            counter[(x, y)] = counter.get((x, y), 0) + 1
            taken.append(idx)
        if len(taken) >= k_local:
            break
    rest = sorted((i for i in range(height * width) if i not in taken), key=lambda i: (-float(global_[i]), i))
    return sorted(taken + rest[: budget - k_local])


@pytest.mark.parametrize(
    ("height", "width", "budget", "window"), [(6, 9, 20, 4), (36, 36, 216, 4), (5, 3, 7, 4)]
)
def test_capped_window_rule_equals_the_reference_loop(height, width, budget, window):
    gen = torch.Generator().manual_seed(height * 100 + width)
    local, global_ = torch.rand(height * width, generator=gen), torch.rand(height * width, generator=gen)
    idx = torch.arange(height * width)
    got = grid_window_global_select(local, global_, idx // width, idx % width, budget, window, rule="capped")
    assert got.tolist() == _capped_plain(local, global_, height, width, budget, window)
    assert got.numel() == budget


@pytest.mark.parametrize(
    ("keep", "sizes", "want"),
    [(640, [576] * 5, [128] * 5), (40, [64, 40, 40, 40, 40], [12, 7, 7, 7, 7]), (3, [64, 40, 20], [1, 1, 1])],
)
def test_tile_budget_split(keep, sizes, want):
    assert split_keep(keep, sizes) == want


def test_loading_knows_the_three_families_and_names_others(tmp_path):
    for name, build in (("next", tiny_llava_next), ("qwen", tiny_qwen25_vl)):
        build().save_pretrained(tmp_path / name)
    assert check_architecture(tmp_path / "next") == "LlavaNextForConditionalGeneration"
    assert check_architecture(tmp_path / "qwen") == "Qwen2_5_VLForConditionalGeneration"
    assert "Qwen2_5_VLForConditionalGeneration" in ARCHITECTURES
    config = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(tmp_path / "llama")
    with pytest.raises(ValueError, match="unsupported model architecture LlamaForCausalLM"):
        check_architecture(tmp_path / "llama")


def test_adapter_for_names_an_unsupported_architecture():
    with pytest.raises(ValueError, match="unsupported model architecture 'Linear'"):
        adapter_for(torch.nn.Linear(2, 2))


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_method_arguments(parser)
    return parser.parse_args(argv)


def build_method(args: argparse.Namespace, model: str = "qwen2.5-vl"):
    return method_request(args).build(model)


def test_cli_ratio_options_build_the_qwen_reference_schedule():
    args = _args(
        ["--image-token-ratio", "0.167", "--image-token-ratio-list", "[0.333]", "--layer-list", "[14]"]
    )
    method = build_method(args)
    assert summary_of(method) == {
        "layer_list": [14],
        "image_token_ratio": 0.167,
        "image_token_ratio_list": [0.333],
    }
    preset = build_method(_args(["--budget", "64", "--mode", "w_ve"]), "qwen2.5-vl")
    assert preset.schedule() == method.schedule()


def summary_of(method) -> dict:
    summary = method.describe()
    return {
        k: v
        for k, v in summary.items()
        if k in ("layer_list", "image_token_ratio", "image_token_ratio_list") and v not in (None, [])
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--layer-list", "[2]", "--image-token-ratio-list", "[1.5]"], r"\(0, 1\]"),
        (["--layer-list", "[2]", "--image-token-ratio-list", "0.5"], "JSON list"),
        (
            ["--layer-list", "[2]", "--image-token-list", "[4]", "--image-token-ratio-list", "[0.5]"],
            "not both",
        ),
        (
            ["--method", "visionzip", "--layer-list", "[2]", "--image-token-ratio-list", "[0.5]"],
            "has no option",
        ),
        (["--image-token-ratio", "0.5", "--mode", "wo_ve"], "wo_ve"),
    ],
)
def test_cli_ratio_options_reject_bad_values(argv, message):
    with pytest.raises(ValueError, match=message):
        build_method(_args(argv))
