"""TRIO's pieces against plain re-implementations of the reference algorithm."""

import pytest
import torch
from helpers import (
    merge_plain,
    plain_nms,
    prompt_embeds,
    reference_probe_saliency,
    run_layers,
    window_global_plain,
)

import trio_vlm
from trio_vlm.adapters import adapter_for
from trio_vlm.methods.nms import nms_select, nms_select_loop
from trio_vlm.methods.probe import fast_saliency, reference_saliency
from trio_vlm.methods.window_global import merge_into_nearest, window_global_select
from trio_vlm.testing.tiny import tiny_inputs


def _clustered(seed: int, n: int, d: int = 8, spread: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, d, generator=g)
    feats = centres[torch.randint(0, 6, (n,), generator=g)] + spread * torch.randn(n, d, generator=g)
    return torch.rand(n, generator=g), feats


@pytest.mark.parametrize("seed", range(25))
def test_device_nms_equals_loop_nms_and_plain_reference(seed):
    n = 20 + 7 * seed
    scores, feats = _clustered(seed, n)
    for k in (1, n // 7 + 1, n // 2, n):
        for tau in (0.5, 0.8, 0.95):
            fast = nms_select(scores, feats, k, tau)
            assert torch.equal(fast, nms_select_loop(scores, feats, k, tau))
            assert fast.tolist() == plain_nms(scores.numpy(), feats.numpy(), k, tau)
            assert fast.numel() == k


def _state_before(model, x, layers, padding=None):
    h = prompt_embeds(model, x)
    seq = h.shape[1]
    valid = torch.ones(h.shape[0], seq, dtype=torch.bool) if padding is None else padding
    pos = torch.arange(seq)[None].expand(h.shape[0], -1)
    return run_layers(model, h, range(layers), pos, valid), pos, valid


@pytest.mark.parametrize("fixture", ["tiny", "tiny_eager"])
@pytest.mark.parametrize("include_last", [False, True])
def test_fast_probe_equals_reference_probe(fixture, include_last, request):
    model = request.getfixturevalue(fixture)
    adapter = adapter_for(model)
    x = tiny_inputs(model, batch=2, seed=11)
    with torch.no_grad():
        h, pos, valid = _state_before(model, x, 2)
        kwargs = {
            "attention_mask": None,
            "position_ids": pos,
            "position_embeddings": model.model.language_model.rotary_emb(h, pos),
        }
        if model.config.text_config._attn_implementation == "eager":
            from helpers import float_causal_mask

            kwargs["attention_mask"] = float_causal_mask(valid)
        last = torch.full((2,), h.shape[1] - 1)
        ref = reference_saliency(adapter, 2, h, kwargs, last, include_last=include_last)
        fast = fast_saliency(adapter, 2, h, kwargs, last, valid, include_last=include_last)
    assert ref.shape == (2, h.shape[1])
    assert float(ref.min()) >= 0 and float(ref.max()) > 0
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-7)
    if not include_last:
        plain = reference_probe_saliency(model, 2, h, pos, valid)
        torch.testing.assert_close(ref, plain, rtol=1e-4, atol=1e-7)


def test_probe_respects_right_padding(tiny):
    """With right padding, the loss positions count back from each sample's last real token."""
    adapter = adapter_for(tiny)
    x = tiny_inputs(tiny, batch=2, seed=12)
    valid = torch.ones(2, x["input_ids"].shape[1], dtype=torch.bool)
    valid[1, -3:] = False
    with torch.no_grad():
        h, pos, _ = _state_before(tiny, x, 1, padding=valid)
        from helpers import float_causal_mask

        kwargs = {
            "attention_mask": float_causal_mask(valid),
            "position_ids": pos,
            "position_embeddings": tiny.model.language_model.rotary_emb(h, pos),
        }
        last = torch.tensor([valid.shape[1] - 1, valid.shape[1] - 4])
        fast = fast_saliency(adapter, 1, h, kwargs, last, valid)
        ref = reference_saliency(adapter, 1, h, kwargs, last)
        plain = reference_probe_saliency(tiny, 1, h, pos, valid)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(fast[:, :-3], plain[:, :-3], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("probe", ["fast", "reference"])
@pytest.mark.parametrize("nms", ["device", "loop"])
def test_kept_indices_equal_plain_reimplementation_two_stages(tiny, probe, nms):
    x = tiny_inputs(tiny, seed=13)
    method = trio_vlm.TRIO(layer_list=[1, 3], image_token_list=[40, 11], probe=probe, nms=nms)
    with torch.no_grad(), trio_vlm.apply(tiny, method) as run:
        tiny(**x)
    vis = (x["input_ids"][0] == tiny.config.image_token_id).nonzero().flatten()
    with torch.no_grad():
        h, pos, valid = _state_before(tiny, x, 1)
        sal = reference_probe_saliency(tiny, 1, h, pos, valid)[0]
        kept1 = plain_nms(sal[vis].numpy(), h[0, vis].numpy(), 40)
        keep_pos = torch.cat([torch.arange(vis[0]), vis[kept1], torch.arange(vis[-1] + 1, h.shape[1])])
        h2 = h[:, keep_pos]
        n2 = keep_pos.numel()
        pos2, valid2 = torch.arange(n2)[None], torch.ones(1, n2, dtype=torch.bool)
        h2 = run_layers(tiny, h2, range(1, 3), pos2, valid2)
        sal2 = reference_probe_saliency(tiny, 3, h2, pos2, valid2)[0]
        vis2 = torch.arange(int(vis[0]), int(vis[0]) + 40)
        kept2 = plain_nms(sal2[vis2].numpy(), h2[0, vis2].numpy(), 11)
    assert run.events[0].kept[0].tolist() == kept1
    assert run.events[1].kept[0].tolist() == [kept1[i] for i in kept2]
    torch.testing.assert_close(run.events[0].scores[0], sal[vis], rtol=1e-4, atol=1e-7)
    assert run.events[1].candidates[0].tolist() == kept1


def test_topk_ablation_keeps_highest_saliency(tiny):
    x = tiny_inputs(tiny, seed=14)
    with (
        torch.no_grad(),
        trio_vlm.apply(tiny, trio_vlm.TRIO(layer_list=[2], image_token_list=[25], use_nms=False)) as run,
    ):
        tiny(**x)
    e = run.events[0]
    best = torch.sort(e.scores[0], descending=True, stable=True).indices[:25]
    assert e.kept[0].tolist() == sorted(e.candidates[0][best].tolist())


def test_cls_attention_rows_equal_eager_attention_weights(tiny_eager):
    adapter = adapter_for(tiny_eager)
    x = tiny_inputs(tiny_eager, batch=2, seed=15)
    captured = {}
    layer = adapter.vision_layers[5]

    def grab(module, args, kwargs):
        captured["h"] = args[0] if args else kwargs["hidden_states"]

    handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        out = tiny_eager.model.vision_tower(x["pixel_values"], output_attentions=True)
        rows = adapter.cls_attention_from_input(layer, captured["h"])
    handle.remove()
    want = out.attentions[5][:, :, 0, 1:].mean(1)
    torch.testing.assert_close(rows, want, rtol=1e-5, atol=1e-6)


def test_encoder_stage_window_global_and_merge_equal_plain_reference():
    g = torch.Generator().manual_seed(3)
    for budget in (96, 64, 40, 17):
        shallow, deep = torch.rand(576, generator=g), torch.rand(576, generator=g)
        got = window_global_select(shallow, deep, budget, window=6)
        assert got.tolist() == window_global_plain(shallow, deep, budget, 6)
    feats = torch.randn(50, 8, generator=g)
    kept = torch.tensor([1, 5, 9, 20, 33, 49])
    torch.testing.assert_close(merge_into_nearest(feats, kept), merge_plain(feats, kept.tolist()))


def test_encoder_stage_feeds_merged_features_to_the_llm(tiny):
    x = tiny_inputs(tiny, seed=16)
    method = trio_vlm.TRIO(layer_list=[], image_token_list=[], visual_token_num=48, window=6)
    adapter = adapter_for(tiny)
    rows = {}
    hooks = [
        adapter.vision_layers[i].register_forward_pre_hook(
            (lambda idx: lambda m, a, k: rows.__setitem__(idx, adapter.cls_attention_from_input(m, a[0])))(i),
            with_kwargs=True,
        )
        for i in (5, 6)
    ]
    with torch.no_grad(), trio_vlm.apply(tiny, method) as run:
        got = tiny(**x).logits
    for h in hooks:
        h.remove()
    e = run.events[0]
    assert e.stage.is_encoder and e.tokens_after == [48]
    expect = window_global_plain(rows[5][0], rows[6][0], 48, 6)
    assert e.kept[0].tolist() == expect
    with torch.no_grad():
        h = prompt_embeds(tiny, x)
        vis = (x["input_ids"][0] == tiny.config.image_token_id).nonzero().flatten()
        merged = merge_plain(h[0, vis], expect)
        keep_pos = torch.cat([torch.arange(vis[0]), vis[expect], torch.arange(vis[-1] + 1, h.shape[1])])
        h = h[:, keep_pos].clone()
        h[0, vis[0] : vis[0] + 48] = merged
        n = h.shape[1]
        want = tiny.lm_head(
            tiny.model.language_model.norm(
                run_layers(tiny, h, range(6), torch.arange(n)[None], torch.ones(1, n, dtype=torch.bool))
            )
        )
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fixture", ["tiny", "tiny_eager"])
def test_recomputed_llm_attention_rows_equal_eager_weights(fixture, request):
    """adapter.attention_probs (used by attention-scored methods) equals the layer's eager attention weights."""
    model = request.getfixturevalue(fixture)
    adapter = adapter_for(model)
    x = tiny_inputs(model, batch=2, seed=17)
    with torch.no_grad():
        h, pos, valid = _state_before(model, x, 2)
        cos, sin = model.model.language_model.rotary_emb(h, pos)
        rows = torch.tensor([[h.shape[1] - 1, 40], [h.shape[1] - 3, 7]])
        got = adapter.attention_probs(2, h, rows, cos, sin, valid)
        attn = model.model.language_model.layers[2].self_attn
        from helpers import float_causal_mask
        from transformers.models.llama.modeling_llama import eager_attention_forward

        normed = model.model.language_model.layers[2].input_layernorm(h)
        shape = (*h.shape[:2], -1, attn.head_dim)
        q = attn.q_proj(normed).view(shape).transpose(1, 2)
        k = attn.k_proj(normed).view(shape).transpose(1, 2)
        v = attn.v_proj(normed).view(shape).transpose(1, 2)
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        _, weights = eager_attention_forward(attn, q, k, v, float_causal_mask(valid), scaling=attn.scaling)
    want = torch.stack([weights[b, :, rows[b]] for b in range(2)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_batched_device_nms_equals_loop_per_group():
    from trio_vlm.methods.nms import nms_select_batched

    groups = [_clustered(100 + i, n) for i, n in enumerate((30, 57, 1, 44))]
    ks = [7, 20, 1, 44]
    got = nms_select_batched([s for s, _ in groups], [f for _, f in groups], ks, 0.8)
    for (s, f), k, kept in zip(groups, ks, got):
        assert torch.equal(kept, nms_select_loop(s, f, k, 0.8))
