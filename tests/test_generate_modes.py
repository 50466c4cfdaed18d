"""Every registered method under every decoding mode of ``generate``: greedy, sampling, beam search and several
returned sequences, on every family, single and batched (padded). The prompts' kept tokens must equal the
greedy run's (each expanded copy of a prompt keeps what the prompt kept), and the outputs must be well formed."""

from __future__ import annotations

import pytest
import torch
from method_table import FAMILIES, METHOD_TABLE, cell
from test_families import _inputs

import trio_vlm
from trio_vlm.methods.registry import available_methods
from trio_vlm.testing.tiny import tiny_inputs
from trio_vlm.testing.tiny_families import tiny_family_models

MODES = {
    "greedy": {"do_sample": False},
    "sample": {"do_sample": True, "top_k": 8},
    "beam": {"do_sample": False, "num_beams": 2},
    "return2": {"do_sample": True, "num_return_sequences": 2},
    "beam_return2": {"do_sample": False, "num_beams": 3, "num_return_sequences": 2},
}
NEW_TOKENS = 2


@pytest.fixture(scope="module")
def models():
    return tiny_family_models(seed=0)


def padded_llava_inputs(model) -> dict[str, torch.Tensor]:
    """Two LLaVA-1.5 prompts of different lengths, left-padded as generate expects."""
    x = tiny_inputs(model, batch=2, seed=5)
    ids, mask = x["input_ids"], x["attention_mask"]
    short = torch.cat(
        [torch.zeros(1, 3, dtype=ids.dtype), ids[1:, 3:]], dim=1
    )  # drop 3 prefix tokens, pad left
    x["input_ids"] = torch.cat([ids[:1], short])
    x["attention_mask"] = torch.cat(
        [mask[:1], torch.cat([torch.zeros(1, 3), mask[1:, 3:]], 1).to(mask.dtype)]
    )
    return x


def batches(family: str, model) -> dict[str, dict[str, torch.Tensor]]:
    if family == "llava-1.5":
        single = tiny_inputs(model, batch=1, seed=6)
        return {"single": single, "padded": padded_llava_inputs(model)}
    return {"padded": _inputs(family, model)}


def run(model, method, x, **kwargs):
    torch.manual_seed(0)
    with torch.no_grad(), trio_vlm.apply(model, method) as record:
        out = model.generate(**x, max_new_tokens=NEW_TOKENS, pad_token_id=0, **kwargs)
    return out, [e for e in record.events if e.call == 0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", available_methods())
def test_every_mode_keeps_what_greedy_keeps(models, family, name):
    if family in cell(name).not_applicable:
        pytest.skip(cell(name).not_applicable[family])
    model = models[family]
    vocab = model.config.text_config.vocab_size
    for label, x in batches(family, model).items():
        greedy, greedy_events = run(model, cell(name).build(), x, **MODES["greedy"])
        batch, prompt = x["input_ids"].shape
        for mode, kwargs in MODES.items():
            out, events = run(model, cell(name).build(), x, **kwargs)
            copies = max(kwargs.get("num_beams", 1), kwargs.get("num_return_sequences", 1))
            returned = kwargs.get("num_return_sequences", 1)
            assert out.shape[0] == batch * returned and prompt < out.shape[1] <= prompt + NEW_TOKENS, (
                mode,
                label,
            )
            assert torch.equal(out[:, :prompt], x["input_ids"].repeat_interleave(returned, 0)), (mode, label)
            assert int(out.min()) >= 0 and int(out.max()) < vocab
            assert [e.stage for e in events] == [e.stage for e in greedy_events], (mode, label)
            for e, g in zip(events, greedy_events):
                assert len(e.kept) == batch * copies
                for s, kept in enumerate(e.kept):
                    if name == "random":  # fresh draws per sample: sizes match, the subsets need not
                        assert kept.numel() == g.kept[s // copies].numel()
                    else:
                        assert torch.equal(kept, g.kept[s // copies]), (mode, label, e.stage, s)
        if mode == "greedy":
            assert torch.equal(out, greedy)


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_search_through_a_keep_all_schedule_equals_vanilla(models, family):
    """The decode path (per-layer masks and positions, beam reordering of the caches) is exercised by a
    schedule that drops nothing: beam search must then give vanilla's beams exactly."""
    model = models[family]
    x = batches(family, model)["padded"]
    keep_all = trio_vlm.FastV(layer_list=(1, 3), image_token_list=(100000, 100000))
    kwargs = {"do_sample": False, "num_beams": 3, "num_return_sequences": 2}
    want, _ = run(model, trio_vlm.Vanilla(), x, **kwargs)
    got, events = run(model, keep_all, x, **kwargs)
    assert events and torch.equal(got, want)


def test_the_table_covers_the_registry():
    assert set(available_methods()) <= set(METHOD_TABLE)


@pytest.mark.parametrize("name", available_methods())
def test_inference_mode_gives_what_no_grad_gives(models, name):
    """Issue 14: torch.inference_mode() around a TRIO call failed ("Inference tensors cannot be saved for
    backward"); every method now gives the same tokens and outputs under inference_mode as under no_grad."""
    model = models["llava-1.5"]
    x = batches("llava-1.5", model)["padded"]
    want, want_events = run(model, cell(name).build(), x, do_sample=False)
    torch.manual_seed(0)
    with torch.inference_mode(), trio_vlm.apply(model, cell(name).build()) as record:
        got = model.generate(**x, max_new_tokens=NEW_TOKENS, pad_token_id=0, do_sample=False)
    assert torch.equal(got, want)
    for e, g in zip(record.events, want_events, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(e.kept, g.kept))


def test_a_nested_apply_on_the_same_model_is_refused(models):
    """Issue 14: nested blocks failed with "index 155 is out of bounds"; now a clear error, and the outer
    block still works after the refusal."""
    model = models["llava-1.5"]
    x = tiny_inputs(model, seed=7)
    outer = trio_vlm.FastV(layer_list=(2,), image_token_list=(12,))
    inner = trio_vlm.TRIO(layer_list=[2], image_token_list=[8])
    with torch.no_grad(), trio_vlm.apply(model, outer) as record:
        with (
            pytest.raises(RuntimeError, match="already pruned by 'fastv'.*trio_vlm.Compose"),
            trio_vlm.apply(model, inner),
        ):
            pass
        model(**x)
    assert record.events[0].tokens_after == [12]
    with torch.no_grad(), trio_vlm.apply(model, trio_vlm.TRIO(layer_list=[2], image_token_list=[8])) as after:
        model(**x)  # the refused block left nothing behind
    assert after.events[0].tokens_after == [8]
