"""How far ``TRIO(reference_quirks=True)`` (the authors' Qwen2.5-VL / LLaVA-NeXT code) moves TRIO's selections.

On the tiny random Qwen2.5-VL and LLaVA-NeXT models (``trio_vlm.testing.tiny_families``), for a few prompts per
family, each schedule runs once with the paper's algorithm (the default) and once per quirk set; printed per row:
the share of the default's finally kept visual tokens the variant also keeps (Jaccard of the two sets), the
visual tokens left after the last stage, the largest last-position logit difference and how often the top-1
next token agrees. Qwen's three quirks are also switched on one at a time by patching the two places they live.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/trio_reference_quirks.py

Random weights: these figures measure how much the selections and outputs diverge, not accuracy.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import torch

import trio_vlm
from trio_vlm.methods import trio_reference
from trio_vlm.testing.tiny_families import next_inputs, qwen_inputs, tiny_llava_next, tiny_qwen25_vl

QWEN_IMAGES = [(28, 28), (20, 36), (36, 20), (24, 32)]  # patches (merged 2×2 into the LLM's tokens)
NEXT_IMAGES = [(33, 20), (20, 40), (40, 24), (30, 30)]  # pixels, 16 px tiles of 8×8 patches
QWEN_ENCODER = {"shallow_layer": 1, "deep_layer": -1, "window": 4, "window_rule": "capped"}
NEXT_ENCODER = {"shallow_layer": 1, "deep_layer": -2, "window": 4}
SCHEDULES = {
    "qwen2.5-vl": {
        "w/o VE  [3] [0.333]": {"layer_list": [3], "image_token_ratio_list": [0.333]},
        "w/ VE  0.167, [3] [0.333]": {
            "image_token_ratio": 0.167,
            "layer_list": [3],
            "image_token_ratio_list": [0.333],
            **QWEN_ENCODER,
        },
    },
    "llava-next": {
        "w/o VE  [1,2,3] [10,6,2]": {"layer_list": [1, 2, 3], "image_token_list": [10, 6, 2]},
        "encoder only  16": {
            "visual_token_num": 16,
            "layer_list": [],
            "image_token_list": [],
            **NEXT_ENCODER,
        },
        "w/ VE  16, [3] [6]": {
            "visual_token_num": 16,
            "layer_list": [3],
            "image_token_list": [6],
            **NEXT_ENCODER,
        },
        "w/ VE  0.167, [3] [0.333]": {
            "image_token_ratio": 0.167,
            "layer_list": [3],
            "image_token_ratio_list": [0.333],
            **NEXT_ENCODER,
        },
    },
}


@contextlib.contextmanager
def qwen_points(points: set[int]):
    """Only the listed Qwen quirks (1: probe layer L-1, 2: embed_tokens head, 3: non-causal after a drop)."""

    def setup(adapter, layer_index):
        return (layer_index - 1 if 1 in points else layer_index), (
            adapter.input_embeddings if 2 in points else adapter.lm_head
        )

    original = trio_vlm.TRIO.causal_after_drop
    with (
        mock.patch.object(trio_reference, "probe_setup", setup),
        mock.patch.object(
            trio_vlm.TRIO, "causal_after_drop", lambda self, family: 3 not in points or original(self, family)
        ),
    ):
        yield


def run(model, inputs, method):
    with torch.no_grad(), trio_vlm.apply(model, method) as pruned:
        logits = model(**inputs).logits[0, -1]
    last = [e for e in pruned.events][-1]
    return set(last.kept[0].tolist()), logits


def compare(
    model, prompts, fields, variant=contextlib.nullcontext
) -> tuple[float, float, float, float, float]:
    jaccard, tokens_default, tokens_variant, diff, agree = [], [], [], [], []
    for x in prompts:
        kept_d, logits_d = run(model, x, trio_vlm.TRIO(**fields))
        with variant():
            kept_v, logits_v = run(model, x, trio_vlm.TRIO(**fields, reference_quirks=True))
        jaccard.append(len(kept_d & kept_v) / len(kept_d | kept_v))
        tokens_default.append(len(kept_d))
        tokens_variant.append(len(kept_v))
        diff.append(float((logits_d - logits_v).abs().max()))
        agree.append(float(logits_d.argmax() == logits_v.argmax()))
    n = len(prompts)
    return (
        sum(jaccard) / n,
        sum(tokens_default) / n,
        sum(tokens_variant) / n,
        sum(diff) / n,
        sum(agree) / n,
    )


def main() -> None:
    torch.manual_seed(0)
    models = {"qwen2.5-vl": tiny_qwen25_vl(seed=1), "llava-next": tiny_llava_next(seed=1)}
    prompts = {
        "qwen2.5-vl": [
            qwen_inputs(models["qwen2.5-vl"], images=[[s]], seed=i) for i, s in enumerate(QWEN_IMAGES)
        ],
        "llava-next": [
            next_inputs(models["llava-next"], image_sizes=[[s]], seed=i) for i, s in enumerate(NEXT_IMAGES)
        ],
    }
    header = f"{'family':<11} {'schedule':<26} {'quirks':<14} {'Jaccard':>7} {'kept':>13} {'max|dlogit|':>11} {'top-1':>5}"
    print(header)
    print("-" * len(header))
    for family, schedules in SCHEDULES.items():
        for label, fields in schedules.items():
            variants = {"all": contextlib.nullcontext}
            if family == "qwen2.5-vl":
                variants = {
                    "1 (layer L-1)": lambda: qwen_points({1}),
                    "2 (embed head)": lambda: qwen_points({2}),
                    "3 (non-causal)": lambda: qwen_points({3}),
                    "all (1+2+3)": contextlib.nullcontext,
                }
            for name, variant in variants.items():
                j, kd, kv, d, a = compare(models[family], prompts[family], fields, variant)
                kept = f"{kd:.1f}->{kv:.1f}"
                print(f"{family:<11} {label:<26} {name:<14} {j:>7.3f} {kept:>13} {d:>11.3f} {a:>5.2f}")
    print(
        "llava-next point 5, encoder only 16 per tile: kept tokens cut by unpadding",
        unpadding_cuts(models, prompts),
    )


def unpadding_cuts(models, prompts) -> list[int]:
    """Per NeXT prompt: tokens the reference's per-tile selection keeps that unpadding then removes."""
    fields = SCHEDULES["llava-next"]["encoder only  16"]
    method = trio_vlm.TRIO(**fields, reference_quirks=True)
    out = []
    for x in prompts["llava-next"]:
        with torch.no_grad(), trio_vlm.apply(models["llava-next"], method) as pruned:
            models["llava-next"](**x)
        tiles = int((x["pixel_values"][0].flatten(1).abs().sum(1) > 0).sum())
        out.append(tiles * 16 - pruned.events[0].tokens_after[0])
    return out


if __name__ == "__main__":
    main()
