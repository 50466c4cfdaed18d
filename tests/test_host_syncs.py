"""Issue 16: the engine never waits for the device per image, per token or per stage during a prefill.

Every call that makes the host wait for a tensor's value (``.item()``, ``.tolist()``, ``.cpu()``, ``bool()``,
``int()``, ``nonzero``, ``unique``, ``torch.equal`` …) is counted while its innermost trio-vlm caller is the
engine, an adapter or the API (methods' own work is theirs). The count per prefill must not grow with the batch
size or the number of stages."""

from __future__ import annotations

import collections
import os
import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode

import trio_vlm
from trio_vlm.testing.tiny import tiny_inputs, tiny_llava

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
#: Host reads a whole prefill may make: the layout (one nonzero + one count read), padding flags, timing.
BOUND = 8


class SyncCounter(TorchFunctionMode):
    """Counts host-synchronising tensor calls whose innermost trio-vlm frame is on the engine's path."""

    def __init__(self) -> None:
        super().__init__()
        self.where: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in SYNCS:
            for frame in reversed(traceback.extract_stack()):
                if f"{os.sep}trio_vlm{os.sep}" in frame.filename:
                    if any(part in frame.filename for part in ENGINE_PATH):
                        self.where[f"{os.path.basename(frame.filename)}:{frame.lineno} {func.__name__}"] += 1
                    break
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.where.values())


@pytest.fixture(scope="module")
def model():
    return tiny_llava(seed=0)


def prefill_syncs(model, method, batch: int) -> SyncCounter:
    x = tiny_inputs(model, batch=batch, seed=3)
    with torch.no_grad(), trio_vlm.apply(model, method):
        model(**x)  # warm-up: first-call work (hook installation) is not a prefill's
        with SyncCounter() as counter:
            model(**x)
    return counter


ONE_STAGE = trio_vlm.Random(layer_list=(2,), image_token_list=(20,))
FOUR_STAGES = trio_vlm.Random(visual_token_num=100, layer_list=(1, 2, 4), image_token_list=(60, 30, 10))


@pytest.mark.parametrize("method", [ONE_STAGE, FOUR_STAGES], ids=["1 stage", "4 stages"])
@pytest.mark.parametrize("batch", [1, 4])
def test_host_syncs_per_prefill_are_bounded(model, method, batch):
    counter = prefill_syncs(model, method, batch)
    assert counter.total <= BOUND, counter.where.most_common()


def test_host_syncs_do_not_grow_with_batch_or_stages(model):
    totals = {
        (m.name, len(m.schedule().layer_list), b): prefill_syncs(model, m, b).total
        for m in (ONE_STAGE, FOUR_STAGES)
        for b in (1, 4)
    }
    assert len(set(totals.values())) == 1, totals
