"""Per-method testbed schedules: the paper's average-token arithmetic over the testbed model's depth."""

from __future__ import annotations

import pytest

from trio_vlm.methods.registry import available_methods
from trio_vlm.schedule import Schedule
from trio_vlm.testbed.schedules import BUDGETS, fit_counts, scaled_method, variant_label, variants

LAYERS, VISUAL = 16, 576


def plain_average(layers, counts, visual_token_num, num_layers=LAYERS, num_visual=VISUAL) -> float:
    """Visual tokens entering each decoder layer, averaged: a plain loop over the layers."""
    current = num_visual if visual_token_num is None else visual_token_num
    per_layer = []
    for layer in range(num_layers):
        for drop_after, count in zip(layers, counts):
            if layer == drop_after:
                current = min(current, count)
        per_layer.append(current)
    return sum(per_layer) / num_layers


@pytest.mark.parametrize("budget", BUDGETS)
def test_every_variant_hits_the_budget(budget: int) -> None:
    for name, mode in variants():
        s = scaled_method(name, budget, mode).schedule()
        average = plain_average(s.layer_list, s.image_token_list, s.visual_token_num)
        assert abs(average - budget) <= 1.0, (name, mode, s)
        assert all(layer < LAYERS for layer in s.layer_list)


def test_trio_layers_scale_proportionally() -> None:
    s = scaled_method("trio", 64, "wo_ve").schedule()
    assert s.layer_list == (1, 5, 8)  # (1, 10, 15) of 32 layers, halved and rounded
    assert s.visual_token_num is None
    # One factor on the reference counts (92, 54, 22): ratios survive up to rounding.
    assert s.image_token_list[0] / 92 == pytest.approx(s.image_token_list[2] / 22, rel=0.1)
    w_ve = scaled_method("trio", 64, "w_ve").schedule()
    assert (w_ve.visual_token_num, w_ve.layer_list, w_ve.image_token_list) == (96, (8,), (32,))


def test_depths_round_down_when_nearest_is_out_of_reach() -> None:
    # SparseVLM drops after 3, 7 and 16 of 32 layers: to the nearest layer that is 2, 4, 8 of 16, where two
    # full layers already average 72 > 64 tokens; rounding down (1, 3, 8) reaches 64.
    assert scaled_method("sparsevlm", 128).schedule().layer_list == (2, 4, 8)
    s = scaled_method("sparsevlm", 64).schedule()
    assert s.layer_list == (1, 3, 8)
    assert abs(plain_average(s.layer_list, s.image_token_list, None) - 64) <= 1.0


def test_fit_counts_is_exact_where_possible_and_refuses_the_impossible() -> None:
    fitted = fit_counts(Schedule((1,), (100,)), 64, LAYERS)
    assert fitted.image_token_list == (30,)  # (576 + 15·30) / 16 = 64.1
    assert fit_counts(Schedule((), (), 64), 64, LAYERS) == Schedule((), (), 64)
    with pytest.raises(ValueError, match="out of reach"):
        fit_counts(Schedule((8,), (10,)), 64, LAYERS)


def test_variants_cover_the_registry() -> None:
    names = {name for name, _ in variants()}
    assert names == set(available_methods()) - {"vanilla"}
    assert ("trio", "w_ve") in variants() and ("trio", "wo_ve") in variants()
    assert variants(["random"]) == [("random", None)]
    assert variant_label("trio", "w_ve") == "trio (w/ VE)"
    assert variant_label("fastv", None) == "fastv"
