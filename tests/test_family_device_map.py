"""A model split over two devices with ``device_map`` (accelerate's hooks) prunes exactly like the whole model.

On a machine with a GPU the split is real (first half on ``cuda:0``, second half on the CPU); on a CPU-only
machine both halves are on the CPU but accelerate's device hooks are forced on, so the engine's hooks run
under them. The drop after layer 3 sits at the boundary of the two halves.
"""

from __future__ import annotations

import pytest
import torch
from device_split import DEVICES, load_split

import trio_vlm
from trio_vlm.methods.fastv import FastV
from trio_vlm.testing.tiny_families import next_inputs, qwen_inputs, tiny_llava_next, tiny_qwen25_vl

accelerate = pytest.importorskip("accelerate")


# accelerate warns that the parameter key ``model.image_newline`` names no submodule, yet needs it covered
@pytest.mark.filterwarnings("ignore:The following device_map keys")
@pytest.mark.parametrize("family", ["llava-next", "qwen2.5-vl"])
def test_split_model_prunes_like_the_whole_model(family, tmp_path):
    whole = tiny_llava_next(seed=2) if family == "llava-next" else tiny_qwen25_vl(seed=2)
    whole.save_pretrained(tmp_path)
    split = load_split(type(whole).from_pretrained, tmp_path, family).eval()
    if family == "llava-next":
        x = next_inputs(whole, image_sizes=[[(20, 40)], [(33, 20)]], seed=5)
    else:
        x = qwen_inputs(whole, images=[[(8, 12)], [(12, 16)]], seed=5)
    methods = [
        trio_vlm.TRIO(layer_list=[3, 4], image_token_list=[12, 6]),
        FastV(layer_list=(3,), image_token_list=(10,)),
        trio_vlm.TRIO(
            layer_list=[3],
            image_token_list=(),
            image_token_ratio=0.5,
            image_token_ratio_list=[0.5],
            shallow_layer=1,
            deep_layer=-1,
            window=2,
            window_rule="capped" if family == "qwen2.5-vl" else "quota",
        ),
    ]
    first = DEVICES[0]
    for method in methods:
        with torch.no_grad():
            with trio_vlm.apply(whole, method) as ref_run:
                ref_logits = whole(**x).logits
                ref_ids = whole.generate(**x, max_new_tokens=3, do_sample=False)
            moved = {k: v.to(first) for k, v in x.items()}
            with trio_vlm.apply(split, method) as run:
                logits = split(**moved).logits.cpu()
                ids = split.generate(**moved, max_new_tokens=3, do_sample=False).cpu()
        torch.testing.assert_close(logits, ref_logits, rtol=1e-3, atol=1e-3)
        assert torch.equal(ids, ref_ids)
        for got, want in zip(run.events, ref_run.events, strict=True):
            assert [k.tolist() for k in got.kept] == [k.tolist() for k in want.kept]
