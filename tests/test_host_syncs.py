"""Issue 16: the engine never waits for the device per image, per token or per stage during a prefill.

Every call that makes the host wait for a tensor's value (``.item()``, ``.tolist()``, ``.cpu()``, ``bool()``,
``int()``, ``nonzero``, ``unique``, ``torch.equal`` …) made by the engine, an adapter or the API is counted
(methods' own work is theirs), on every model family. The count per prefill must not grow with the batch size,
the number of images or the number of stages."""

from __future__ import annotations

import collections
import os
import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode

import trio_vlm
from trio_vlm.testing.tiny import tiny_inputs
from trio_vlm.testing.tiny_families import (
    next_inputs,
    qwen_inputs,
    tiny_family_models,
)

SYNCS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.cpu,
    torch.Tensor.numpy,
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
    torch.Tensor.__index__,
    torch.Tensor.__float__,
    torch.Tensor.nonzero,
    torch.nonzero,
    torch.Tensor.unique,
    torch.unique,
    torch.equal,
}
ENGINE_PATH = (f"{os.sep}engine{os.sep}", f"{os.sep}adapters{os.sep}", f"trio_vlm{os.sep}api.py")
#: Host reads a whole prefill may make: the layout (a nonzero and a read of what it found; LLaVA-NeXT one more
#: for its tile grids), the padding flags, the tiles when a stage needs them, the check of the methods' answers.
BOUND = 8


class SyncCounter(TorchFunctionMode):
    """Counts host-synchronising tensor calls made directly by code on the engine's path (the engine, adapters,
    the API); what transformers does inside a function the engine calls is transformers' own work."""

    def __init__(self) -> None:
        super().__init__()
        self.where: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in SYNCS:
            caller = next(
                f
                for f in reversed(traceback.extract_stack()[:-1])
                if f"{os.sep}torch{os.sep}" not in f.filename
            )
            if f"{os.sep}trio_vlm{os.sep}" in caller.filename and any(
                part in caller.filename for part in ENGINE_PATH
            ):
                self.where[f"{os.path.basename(caller.filename)}:{caller.lineno} {func.__name__}"] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.where.values())


@pytest.fixture(scope="module")
def models():
    return tiny_family_models(seed=0)


def inputs(family: str, model, batch: int) -> dict[str, torch.Tensor]:
    """``batch`` prompts (two images in the last one) of different sizes where the family allows."""
    if family == "llava-1.5":
        return tiny_inputs(model, batch=batch, seed=3)
    if family == "llava-next":
        sizes = [[(20, 40)], [(16, 16), (32, 16)]][:batch] if batch == 2 else [[(20, 40)]]
        return next_inputs(model, image_sizes=sizes, seed=3)
    images = [[(8, 12)], [(12, 16), (8, 8)]][:batch] if batch == 2 else [[(8, 12)]]
    return qwen_inputs(model, images=images, seed=3)


def prefill_syncs(model, method, x) -> SyncCounter:
    with torch.no_grad(), trio_vlm.apply(model, method):
        model(**x)  # warm-up: first-call work (hook installation) is not a prefill's
        with SyncCounter() as counter:
            model(**x)
    return counter


METHODS = {
    "1 stage": trio_vlm.Random(layer_list=(2,), image_token_ratio_list=(0.3,)),
    "4 stages": trio_vlm.Random(
        image_token_ratio=0.7, layer_list=(1, 2, 4), image_token_ratio_list=(0.6, 0.5, 0.4)
    ),
}


@pytest.mark.parametrize("family", ["llava-1.5", "llava-next", "qwen2.5-vl"])
def test_host_syncs_do_not_grow_with_batch_images_or_stages(models, family):
    totals = {}
    for name, method in METHODS.items():
        for batch in (1, 2):
            counter = prefill_syncs(models[family], method, inputs(family, models[family], batch))
            assert counter.total <= BOUND, (name, batch, counter.where.most_common())
            totals[(name, batch)] = counter.total
    stage_free = {k: v for k, v in totals.items()}
    # the encoder stage of a family that splits tiles reads the tiles once (the 4-stage method has one)
    assert len({v for (name, _), v in stage_free.items() if name == "1 stage"}) == 1, totals
    assert len({v for (name, _), v in stage_free.items() if name == "4 stages"}) == 1, totals
    assert max(totals.values()) - min(totals.values()) <= 1, totals


def test_methods_that_read_vision_rows_add_one_read(models):
    x = inputs("llava-1.5", models["llava-1.5"], 2)
    plain = prefill_syncs(models["llava-1.5"], METHODS["1 stage"], x).total
    encoder = prefill_syncs(
        models["llava-1.5"],
        trio_vlm.TRIO(layer_list=[1, 3], image_token_list=[40, 10], visual_token_num=100),
        x,
    )
    assert encoder.total == plain + 1, encoder.where.most_common()
