"""The engine against hand-built references: keep-all, prefill logits after drops, decode, positions."""

import pytest
import torch
from helpers import logits_of, prompt_embeds, run_layers

import trio_vlm
from trio_vlm.testing.tiny import tiny_inputs


def _kept_positions(model, inputs, kept_visual: torch.Tensor, b: int = 0) -> torch.Tensor:
    """Sequence positions that survive when the sample keeps ``kept_visual`` (original visual indices)."""
    ids = inputs["input_ids"][b]
    visual = (ids == model.config.image_token_id).nonzero().flatten()
    keep = torch.ones(ids.numel(), dtype=torch.bool)
    keep[visual] = False
    keep[visual[kept_visual]] = True
    return keep.nonzero().flatten()


@pytest.mark.parametrize("fixture", ["tiny", "tiny_eager"])
def test_keep_all_schedule_is_identical_to_vanilla(fixture, request):
    model = request.getfixturevalue(fixture)
    x = tiny_inputs(model, batch=2, seed=1)
    n = model.config.image_seq_length
    with torch.no_grad():
        ref_logits = model(**x).logits
        ref_ids = model.generate(**x, max_new_tokens=6, do_sample=False)
        method = trio_vlm.TRIO(layer_list=[1, 3], image_token_list=[n + 10, n], visual_token_num=None)
        with trio_vlm.apply(model, method) as run:
            logits = model(**x).logits
            ids = model.generate(**x, max_new_tokens=6, do_sample=False)
    assert torch.equal(logits, ref_logits)
    assert torch.equal(ids, ref_ids)
    assert [e.tokens_after for e in run.events] == [[n, n]] * 4


def test_leaving_the_context_restores_the_model(tiny):
    x = tiny_inputs(tiny, seed=2)
    state = {k: v.clone() for k, v in tiny.state_dict().items()}

    def hook_counts():
        return {n: (len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in tiny.named_modules()}

    hooks_before = hook_counts()
    with torch.no_grad():
        before = tiny(**x).logits
        with trio_vlm.apply(tiny, trio_vlm.TRIO(layer_list=[2], image_token_list=[20])):
            pruned = tiny(**x).logits
        after = tiny(**x).logits
    assert pruned.shape[1] == before.shape[1] - (tiny.config.image_seq_length - 20)
    assert torch.equal(before, after)
    assert all(torch.equal(state[k], v) for k, v in tiny.state_dict().items())
    assert hook_counts() == hooks_before


@pytest.mark.parametrize("fixture", ["tiny", "tiny_eager"])
@pytest.mark.parametrize("positions", ["compact", "original"])
def test_prefill_logits_equal_hand_reference_after_two_drops(fixture, positions, request):
    model = request.getfixturevalue(fixture)
    x = tiny_inputs(model, seed=3)
    method = trio_vlm.TRIO(layer_list=[2, 4], image_token_list=[50, 12], position_mode=positions)
    with torch.no_grad():
        with trio_vlm.apply(model, method) as run:
            got = model(**x).logits
        h = prompt_embeds(model, x)
        seq = h.shape[1]
        pos = torch.arange(seq)[None]
        valid = torch.ones(1, seq, dtype=torch.bool)
        h = run_layers(model, h, range(0, 2), pos, valid)
        keep1 = _kept_positions(model, x, run.events[0].kept[0])
        h, pos = h[:, keep1], pos[:, keep1]
        if positions == "compact":
            pos = torch.arange(h.shape[1])[None]
        h = run_layers(model, h, range(2, 4), pos, valid[:, keep1])
        keep2 = _kept_positions(model, x, run.events[1].kept[0])  # original indices → original positions
        sel = torch.searchsorted(keep1, keep2)
        h, pos = h[:, sel], (pos[:, sel] if positions == "original" else torch.arange(sel.numel())[None])
        h = run_layers(model, h, range(4, model.config.text_config.num_hidden_layers), pos, valid[:, keep2])
        want = logits_of(model, h)
    assert got.shape == want.shape == (1, seq - (144 - 12), model.config.text_config.vocab_size)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("positions", ["compact", "original"])
def test_greedy_decode_matches_full_recompute_and_per_layer_cache_lengths(tiny, positions):
    x = tiny_inputs(tiny, seed=4)
    n_layers = tiny.config.text_config.num_hidden_layers
    drop_after, keep = 3, 16
    steps = 5
    method = trio_vlm.TRIO(layer_list=[drop_after], image_token_list=[keep], position_mode=positions)
    with torch.no_grad():
        with trio_vlm.apply(tiny, method) as run:
            out = tiny.generate(**x, max_new_tokens=steps, do_sample=False, return_dict_in_generate=True)
        cache = getattr(out, "cache", None) or out.past_key_values
        seq = x["input_ids"].shape[1]
        kept_len = seq - (144 - keep)
        lengths = [cache.layers[i].keys.shape[-2] for i in range(n_layers)]
        assert lengths == [seq + steps - 1] * drop_after + [kept_len + steps - 1] * (n_layers - drop_after)

        # full recompute, no cache: early layers see everything, later layers the kept tokens + generated ones
        kept_pos = _kept_positions(tiny, x, run.events[0].kept[0])
        embed = tiny.get_input_embeddings()
        h0 = prompt_embeds(tiny, x)
        generated = []
        for _ in range(steps):
            extra = embed(torch.tensor([generated], dtype=torch.long)) if generated else h0[:, :0]
            h = torch.cat([h0, extra], 1)
            total = h.shape[1]
            valid = torch.ones(1, total, dtype=torch.bool)
            h = run_layers(tiny, h, range(drop_after), torch.arange(total)[None], valid)
            sel = torch.cat([kept_pos, torch.arange(seq, total)])
            pos = torch.arange(sel.numel())[None] if positions == "compact" else sel[None]
            h = run_layers(tiny, h[:, sel], range(drop_after, n_layers), pos, valid[:, sel])
            generated.append(int(logits_of(tiny, h)[0, -1].argmax()))
    assert out.sequences[0, seq:].tolist() == generated


def test_batch_with_left_padding_equals_samples_alone(tiny):
    a = tiny_inputs(tiny, prefix=3, suffix=9, seed=5)
    b = tiny_inputs(tiny, prefix=7, suffix=4, seed=6)
    la, lb = a["input_ids"].shape[1], b["input_ids"].shape[1]
    width = max(la, lb)

    def left_pad(t, n, value):
        return torch.cat([torch.full((1, n), value, dtype=t.dtype), t], 1)

    batch = {
        "input_ids": torch.cat(
            [left_pad(a["input_ids"], width - la, 0), left_pad(b["input_ids"], width - lb, 0)]
        ),
        "attention_mask": torch.cat(
            [left_pad(a["attention_mask"], width - la, 0), left_pad(b["attention_mask"], width - lb, 0)]
        ),
        "pixel_values": torch.cat([a["pixel_values"], b["pixel_values"]]),
    }
    method = trio_vlm.TRIO(layer_list=[1, 4], image_token_list=[30, 9], visual_token_num=40, window=6)
    singles, single_events = [], []
    with torch.no_grad():
        for inp in (a, b):
            with trio_vlm.apply(tiny, method) as run:
                singles.append(tiny.generate(**inp, max_new_tokens=5, do_sample=False)[0, -5:])
            single_events.append(run.events)
        with trio_vlm.apply(tiny, method) as run:
            both = tiny.generate(**batch, max_new_tokens=5, do_sample=False)[:, -5:]
    assert torch.equal(both[0], singles[0]) and torch.equal(both[1], singles[1])
    for s in range(2):
        for e_batch, e_single in zip(run.events, single_events[s]):
            assert torch.equal(e_batch.kept[s], e_single.kept[0])
            torch.testing.assert_close(e_batch.scores[s], e_single.scores[0], rtol=1e-4, atol=1e-6)


def test_batch_with_right_padding_forward_equals_samples_alone(tiny_eager):
    model = tiny_eager
    a = tiny_inputs(model, prefix=3, suffix=9, seed=7)
    b = tiny_inputs(model, prefix=2, suffix=5, seed=8)
    la, lb = a["input_ids"].shape[1], b["input_ids"].shape[1]

    def right_pad(t, n):
        return torch.cat([t, torch.zeros((1, n), dtype=t.dtype)], 1)

    batch = {
        "input_ids": torch.cat([a["input_ids"], right_pad(b["input_ids"], la - lb)]),
        "attention_mask": torch.cat([a["attention_mask"], right_pad(b["attention_mask"], la - lb)]),
        "pixel_values": torch.cat([a["pixel_values"], b["pixel_values"]]),
    }
    method = trio_vlm.TRIO(layer_list=[2], image_token_list=[30])
    with torch.no_grad(), trio_vlm.apply(model, method):
        single_a = model(**a).logits[0]
        single_b = model(**b).logits[0]
        both = model(**batch).logits
    torch.testing.assert_close(both[0], single_a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(both[1, : single_b.shape[0]], single_b, rtol=1e-4, atol=1e-4)


def test_sample_without_image_passes_through_untouched(tiny):
    with_img = tiny_inputs(tiny, seed=9)
    seq = with_img["input_ids"].shape[1]
    text = torch.randint(4, 90, (1, seq), generator=torch.Generator().manual_seed(1))
    batch = {
        "input_ids": torch.cat([with_img["input_ids"], text]),
        "attention_mask": torch.ones(2, seq, dtype=torch.long),
        "pixel_values": with_img["pixel_values"],
    }
    with torch.no_grad():
        alone = tiny(input_ids=text, attention_mask=torch.ones(1, seq, dtype=torch.long)).logits[0]
        with trio_vlm.apply(tiny, trio_vlm.TRIO(layer_list=[2], image_token_list=[10])) as run:
            both = tiny(**batch).logits
    # the text-only sample keeps all of its tokens (right-padded after the drop shortened sample 0)
    assert run.events[0].tokens_after == [10, 0]
    torch.testing.assert_close(both[1, :seq], alone, rtol=1e-4, atol=1e-4)
