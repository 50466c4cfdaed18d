"""The one rule that fits a published schedule to any model (trio_vlm.presets), checked by plain arithmetic."""

from __future__ import annotations

import itertools

import pytest

import trio_vlm
from trio_vlm import labels
from trio_vlm.methods.registry import available_methods, method_class
from trio_vlm.methods.sparsevlm import recycled_counts
from trio_vlm.presets import REFERENCE_SHAPES, ModelShape, as_fractions, fit, shape_of
from trio_vlm.testbed.schedules import BUDGETS, variants

TESTBED = ModelShape("llava-1.5", 16, 576, 576)
TINY = ModelShape("llava-1.5", 6, 144, 144)
LLAVA = REFERENCE_SHAPES["llava-1.5"]


def plain_average(name: str, s: trio_vlm.Schedule, num_layers: int, num_visual: int) -> float:
    """Visual tokens entering each decoder layer, averaged: a plain loop (SparseVLM's merged clusters and the
    TRIO encoder quota written out by hand)."""
    current = num_visual
    if s.visual_token_num is not None:
        current = min(s.visual_token_num, num_visual)
    per_layer = []
    for layer in range(num_layers):
        if layer in s.layer_list:
            keep = min(s.image_token_list[s.layer_list.index(layer)], current)
            extra = recycled_counts(current - keep)[1] if name == "sparsevlm" else 0
            current = keep + extra
        per_layer.append(current)
    return sum(per_layer) / num_layers


def test_the_reference_shape_keeps_the_published_schedules() -> None:
    for name in available_methods(include_vanilla=False):
        cls = method_class(name)
        for budget, mode in itertools.product(BUDGETS, cls.modes):
            method = cls.preset("llava-1.5", budget, mode)
            assert fit(method, LLAVA, LLAVA) is method
    assert trio_vlm.TRIO.preset("llava-1.5", 64).image_token_list == (92, 54, 22)
    assert trio_vlm.SparseVLM.preset("llava-1.5", 128).image_token_list == (303, 110, 36)


@pytest.mark.parametrize("budget", BUDGETS)
def test_every_variant_fitted_to_the_testbed_spends_the_reference_average(budget: int) -> None:
    """On 16 layers the fitted schedule's average equals the published schedule's LLaVA-1.5 average up to the
    nearest value reachable along that shape (checked against every count vector a few steps around it)."""
    for name, mode in variants():
        ref = trio_vlm.build_method(name, "llava-1.5", budget, mode)
        want = plain_average(name, ref.schedule(), 32, 576)
        fitted = trio_vlm.build_method(name, TESTBED, budget, mode)
        s = fitted.schedule()
        got = plain_average(name, s, 16, 576)
        assert got == pytest.approx(fitted.average_tokens(16, 576))
        assert all(layer < 16 for layer in s.layer_list)
        if not s.layer_list:
            assert got == want
            continue
        for delta in itertools.product(range(-4, 5), repeat=len(s.image_token_list)):
            counts = [c + d for c, d in zip(s.image_token_list, delta)]
            cap = s.visual_token_num or 576
            if any(not 1 <= c <= (counts[i - 1] if i else cap) for i, c in enumerate(counts)):
                continue
            other = trio_vlm.Schedule(s.layer_list, tuple(counts), s.visual_token_num)
            assert abs(plain_average(name, other, 16, 576) - want) >= abs(got - want) - 1e-9, (name, counts)


def test_layers_scale_proportionally_and_round_down_when_out_of_reach() -> None:
    trio = trio_vlm.TRIO.preset(TESTBED, 64, "wo_ve")
    assert trio.layer_list == (1, 5, 8) and trio.average_tokens(16, 576) == 64.0  # (1, 10, 15) of 32, halved
    w_ve = trio_vlm.TRIO.preset(TESTBED, 64, "w_ve")
    assert (w_ve.visual_token_num, w_ve.layer_list, w_ve.image_token_list) == (96, (8,), (32,))
    # PDrop drops after 2, 6, 16 of 32 layers; halved: 1, 3, 8 — the same spans, so the same counts.
    assert trio_vlm.PDrop.preset(TESTBED, 64).schedule() == trio_vlm.Schedule((1, 3, 8), (66, 30, 17))


def test_a_smaller_model_gets_the_same_share_of_its_visual_tokens() -> None:
    w_ve = trio_vlm.TRIO.preset(TINY, 64, "w_ve")  # 96 of 576 -> 24 of 144; 16 of 32 layers -> 3 of 6
    assert (w_ve.visual_token_num, w_ve.layer_list, w_ve.image_token_list) == (24, (3,), (8,))
    assert w_ve.average_tokens(6, 144) == 64 / 576 * 144
    assert trio_vlm.VisionZip.preset(TINY, 128).visual_token_num == 32


def test_out_of_reach_targets_take_the_nearest_and_warn(caplog) -> None:
    fitted = trio_vlm.FastV.preset(TINY, 64)  # the first full layer alone averages 24 > 16
    assert fitted.image_token_list == (1,) and fitted.average_tokens(6, 144) == pytest.approx((144 + 5) / 6)
    assert "out of reach" in caplog.text


def test_variable_token_families_use_fractions() -> None:
    assert as_fractions({"visual_token_num": 96, "layer_list": (16,), "image_token_list": (32,)}, 576) == {
        "image_token_ratio": round(96 / 576, 4),
        "layer_list": (16,),
        "image_token_ratio_list": (round(32 / 96, 4),),
    }
    qwen = ModelShape("qwen2.5-vl", 28, None, 1296)
    fastv = trio_vlm.FastV.preset(
        qwen, 64
    )  # no published Qwen schedule: LLaVA-1.5's, as fractions, 28 layers
    assert fastv.layer_list == (2,) and fastv.image_token_list == ()
    assert fastv.average_tokens(28, 1296) / 1296 == pytest.approx(64 / 576, abs=0.003)
    assert trio_vlm.TRIO.preset("qwen2.5-vl", 64, "w_ve").image_token_ratio == 0.167  # published


def test_shapes_come_from_models_and_configs(tiny) -> None:
    assert shape_of(tiny) == TINY
    assert shape_of(tiny.config) == TINY
    assert shape_of("llava-next").variable and shape_of(TINY) is TINY
    with pytest.raises(ValueError, match="unknown model family 'llava'"):
        shape_of("llava")


def test_methods_are_frozen_and_validated_at_construction() -> None:
    t = trio_vlm.TRIO(layer_list=[2], image_token_list=[8])
    with pytest.raises(AttributeError):
        t.layer_list = (4,)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        t.tau = 5.0  # type: ignore[misc]
    assert t.replace(layer_list=(4,)).schedule().layer_list == (4,)
    for bad, message in [
        ({"local_ratio": 2.0}, "local_ratio must lie in"),
        ({"window": 0}, "window must lie in 1.."),
        ({"tau": 5.0}, "tau must lie in"),
        ({"probe": "slow"}, "probe must be one of"),
        ({"k_positions": 0}, "k_positions must lie in 1.."),
    ]:
        with pytest.raises(ValueError, match=message):
            trio_vlm.TRIO(**bad)
    with pytest.raises(ValueError, match="tau must lie in"):
        t.replace(tau=5.0)


def test_registry_and_labels() -> None:
    assert available_methods()[0] == "vanilla"
    assert [method_class(n).table_order for n in available_methods()] == sorted(
        method_class(n).table_order for n in available_methods()
    )
    names = {name for name, _ in variants()}
    assert names == set(available_methods()) - {"vanilla"}
    assert ("trio", "w_ve") in variants() and ("trio", "wo_ve") in variants()
    assert variants(["random"]) == [("random", None)]
    assert labels.variant("trio", "w_ve") == "trio (w/ VE)" and labels.variant("fastv", None) == "fastv"
    assert labels.setting(trio_vlm.Vanilla(), None, 576) == "Upper Bound (576)"
    assert labels.setting(trio_vlm.TRIO.preset("llava-1.5", 64, "w_ve"), 64, 576) == "w/ VE (64)"
