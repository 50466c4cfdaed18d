"""VisionZip, HoloV, SCOPE (their non-default options, batches, budgets, presets) and Compose.

References read eager attention weights and hidden states straight off the tiny CLIP tower
(``output_attentions=True``), so they also check the engine's recomputed [CLS] rows and vision-layer inputs.
The defaults against the official code: tests/test_official_fidelity.py.
"""

import math

import pytest
import torch

import trio_vlm
from trio_vlm.adapters import adapter_for
from trio_vlm.methods.compose import Compose
from trio_vlm.methods.holov import HoloV
from trio_vlm.methods.registry import method_class
from trio_vlm.methods.scope import SCOPE
from trio_vlm.methods.visionzip import VisionZip, default_contextual
from trio_vlm.testing.tiny import tiny_inputs

N = 144  # tiny model: 12x12 patches


def tower_outputs(model, x):
    with torch.no_grad():
        return model.model.vision_tower(x["pixel_values"], output_attentions=True, output_hidden_states=True)


def projected(model, out):
    """LLaVA's image features: layer -2 output without [CLS], through the projector."""
    with torch.no_grad():
        return model.model.multi_modal_projector(out.hidden_states[-2][:, 1:])


def pruned_run(model, x, method):
    """Run a prefill under ``method``; return (run, hidden states entering decoder layer 0)."""
    seen = {}

    def grab(module, args, kwargs):
        seen["h"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    with torch.no_grad(), trio_vlm.apply(model, method) as run:
        handle = model.model.language_model.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            model(**x)
        finally:
            handle.remove()
    return run, seen["h"]


# ---- plain references ---------------------------------------------------------------------------------


def visionzip_plain(model, out, b, dominant, contextual):
    """VisionZip's ``cls_token=False`` option on image ``b``: [CLS]'s dominant slot goes to one more patch."""
    layer = adapter_for(model).vision_layers[-2]
    attn = out.attentions[-2][b, :, 0, 1:].sum(0)
    dom = torch.topk(attn, dominant).indices.tolist()
    rest = [i for i in range(N) if i not in dom]
    with torch.no_grad():
        keys = layer.self_attn.k_proj(layer.layer_norm1(out.hidden_states[-3][b]))
    heads = layer.self_attn.num_heads
    keys = keys.view(keys.shape[0], heads, -1).mean(1)[1:]
    metric = [keys[i] / keys[i].norm() for i in rest]
    step = max(1, len(rest) // contextual)
    targets = list(range(0, len(rest), step))[:contextual]
    members = {t: [] for t in targets}
    for j in range(len(rest)):
        if j not in targets:
            sims = [float(metric[j] @ metric[t]) for t in targets]
            members[targets[sims.index(max(sims))]].append(j)
    feats = out.hidden_states[-2][b, 1:]
    merged = {}
    for t in targets:
        extra = torch.stack([feats[rest[j]] for j in members[t]]).mean(0) if members[t] else 0
        merged[rest[t]] = feats[rest[t]] + extra
    return sorted(dom + list(merged)), merged


def holov_scores_plain(feats, attn, crops):
    base, rem = divmod(len(attn), crops)
    bounds, start = [], 0
    for c in range(crops):
        size = base + (1 if c < rem else 0)
        bounds.append((start, start + size))
        start += size
    scores = []
    for s, e in bounds:
        f, a, n = feats[s:e], attn[s:e], e - s
        if n <= 1:
            scores.append(float(a.mean()))
            continue
        f = f / (f.norm(dim=1, keepdim=True) + 1e-6)
        sim = (f @ f.T) * (1 - torch.eye(n))
        mean = sim.sum(1) / (n - 1)
        var = ((sim - mean[:, None]) ** 2).sum(1) / (n - 1)
        scaled = a * 1e3
        scores.append(float((scaled + 0.09 * var * (scaled.abs().mean() / (var.abs().mean() + 1e-6))).mean()))
    return bounds, scores


def split_plain(weights, total):
    w = torch.tensor(weights, dtype=torch.float32)
    w = w / (w.sum() + 1e-6)
    alloc = (w * total).floor().long().tolist()
    left = total - sum(alloc)
    for i in torch.topk(w, min(left, len(weights))).indices.tolist() if left > 0 else []:
        alloc[i] += 1
    return alloc


def holov_plain(feats, attn, keep, crops, reallocate):
    """HoloV's kept set without the zero padding (``shortfall="none"``); with ``reallocate`` a capped crop's
    surplus is re-split (``shortfall="reallocate"``)."""
    bounds, scores = holov_scores_plain(feats, attn, crops)
    sizes = [e - s for s, e in bounds]
    alloc = [min(a, s) for a, s in zip(split_plain(scores, keep), sizes)]
    while reallocate and sum(alloc) < keep:
        room = [c for c in range(crops) if alloc[c] < sizes[c]]
        for c, extra in zip(room, split_plain([scores[c] for c in room], keep - sum(alloc))):
            alloc[c] = min(alloc[c] + extra, sizes[c])
    kept = []
    for (s, _), a, size in zip(bounds, alloc, sizes):
        if a > 0:
            kept += [s + i for i in torch.topk(attn[s : s + size], a).indices.tolist()]
    return sorted(kept)


def scope_plain(feats, attn, keep):
    """Official SCOPE greedy (alpha 1, "multi") with explicit loops over candidates."""
    f = feats / feats.norm(dim=-1, keepdim=True)
    sim = f @ f.T
    cover = torch.zeros(len(attn))
    chosen = []
    for _ in range(keep):
        best, best_val = None, -math.inf
        for i in range(len(attn)):
            if i in chosen:
                continue
            val = float((sim[:, i] - cover).clamp(min=0).sum() * attn[i])
            if val > best_val:
                best, best_val = i, val
        chosen.append(best)
        cover = torch.maximum(cover, sim[best])
    return sorted(chosen)


# ---- VisionZip -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("keep", "contextual", "n_ctx"), [(40, None, 6), (64, 10, 10), (20, 19, 19)])
def test_visionzip_without_cls_in_raster_order_equals_plain_reference(tiny_eager, keep, contextual, n_ctx):
    x = tiny_inputs(tiny_eager, batch=2, seed=21)
    out = tower_outputs(tiny_eager, x)
    method = VisionZip(visual_token_num=keep, contextual=contextual, cls_token=False, order="raster")
    assert method.contextual_count(keep) == n_ctx
    run, h0 = pruned_run(tiny_eager, x, method)
    event = run.events[0]
    feats = projected(tiny_eager, out)
    start = int((x["input_ids"][0] == tiny_eager.config.image_token_id).nonzero()[0])
    for b in range(2):
        kept, merged = visionzip_plain(tiny_eager, out, b, keep - n_ctx, n_ctx)
        assert event.kept[b].tolist() == kept
        # the engine's recomputed [CLS] rows equal the eager attention weights (head mean)
        torch.testing.assert_close(
            event.scores[b], out.attentions[-2][b, :, 0, 1:].mean(0), rtol=1e-5, atol=1e-6
        )
        with torch.no_grad():
            want = torch.stack(
                [
                    tiny_eager.model.multi_modal_projector(merged[i]) if i in merged else feats[b, i]
                    for i in kept
                ]
            )
        torch.testing.assert_close(h0[b, start : start + keep], want, rtol=1e-5, atol=1e-5)
        assert len(merged) == n_ctx and any(not torch.equal(want[k], feats[b, i]) for k, i in enumerate(kept))


def test_visionzip_without_merge_keeps_original_features_and_sdpa_agrees(tiny, tiny_eager):
    x = tiny_inputs(tiny, batch=1, seed=22)
    run_eager, _ = pruned_run(tiny_eager, x, VisionZip(visual_token_num=32))
    run_sdpa, h0 = pruned_run(tiny, x, VisionZip(visual_token_num=32, merge=False, order="raster"))
    kept = run_sdpa.events[0].kept[0]
    assert torch.equal(kept, run_eager.events[0].kept[0])
    assert kept[-1] == N  # [CLS], a created token
    out = tower_outputs(tiny_eager, x)
    with torch.no_grad():
        cls = tiny.model.multi_modal_projector(out.hidden_states[-2][0, :1])
    want = torch.cat([cls, projected(tiny, out)[0, kept[:-1]]])
    start = int((x["input_ids"][0] == tiny.config.image_token_id).nonzero()[0])
    torch.testing.assert_close(h0[0, start : start + 32], want, rtol=1e-5, atol=1e-5)


# ---- HoloV ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("keep", "crops"), [(16, None), (40, 5), (64, 7), (120, 16)])
def test_holov_shortfall_options_equal_plain_reference(tiny_eager, keep, crops):
    x = tiny_inputs(tiny_eager, batch=2, seed=23)
    out = tower_outputs(tiny_eager, x)
    feats = projected(tiny_eager, out)
    n_crops = crops if crops is not None else (1024 * N) // (576 * keep)
    lost = HoloV(visual_token_num=keep, crops=crops, shortfall="none", order="raster")
    moved = HoloV(visual_token_num=keep, crops=crops, shortfall="reallocate")
    ev_lost = pruned_run(tiny_eager, x, lost)[0].events[0]
    ev_moved = pruned_run(tiny_eager, x, moved)[0].events[0]
    shortfall = False
    for b in range(2):
        attn = out.attentions[-2][b, :, 0, 1:].mean(0)
        plain_lost = holov_plain(feats[b], attn, keep, n_crops, reallocate=False)
        plain_moved = holov_plain(feats[b], attn, keep, n_crops, reallocate=True)
        assert ev_lost.kept[b].tolist() == plain_lost
        assert ev_moved.kept[b].tolist() == plain_moved
        assert len(plain_moved) == keep and set(plain_lost) <= set(plain_moved)
        shortfall |= len(plain_lost) < keep
    assert shortfall == (
        keep == 120
    )  # 16 crops of 9 cannot take 120 proportionally: the official code loses some


def test_visionzip_contextual_share_reproduces_official_settings():
    official = {192: 30, 128: 20, 64: 10, 640: 100, 320: 50, 160: 25}  # LLaVA-1.5 and LLaVA-NeXT scripts
    assert {k: default_contextual(k) for k in official} == official
    assert VisionZip(visual_token_num=16).contextual_count(16) == 3


def test_holov_crop_count_follows_the_official_formula():
    assert [HoloV.preset("llava-1.5", b).crops_for(576, b) for b in (192, 128, 64)] == [5, 8, 16]
    assert HoloV(visual_token_num=16).crops_for(N, 16) == 16
    assert HoloV(visual_token_num=16, crops=500).crops_for(N, 16) == N


# ---- SCOPE ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [1, 24, 50])
def test_scope_selection_equals_plain_greedy(tiny_eager, keep):
    x = tiny_inputs(tiny_eager, batch=1, seed=24, n_images=2)
    out = tower_outputs(tiny_eager, x)
    event = pruned_run(tiny_eager, x, SCOPE(visual_token_num=keep))[0].events[0]
    want = []
    for row in range(2):  # two images in one sample: original indices of image 1 start at N
        attn = out.attentions[-2][row, :, 0, 1:].sum(0)
        want += [row * N + i for i in scope_plain(out.hidden_states[-2][row, 1:], attn, keep)]
    assert event.kept[0].tolist() == want


def test_scope_add_combination_uses_head_summed_attention(tiny_eager):
    x = tiny_inputs(tiny_eager, batch=1, seed=25)
    out = tower_outputs(tiny_eager, x)
    got = pruned_run(tiny_eager, x, SCOPE(visual_token_num=12, combine="add", alpha=2.0))[0].events[0].kept[0]
    f = out.hidden_states[-2][0, 1:]
    f = f / f.norm(dim=-1, keepdim=True)
    sim, weight = f @ f.T, out.attentions[-2][0, :, 0, 1:].sum(0) ** 2
    cover, chosen = torch.zeros(N), []
    for _ in range(12):
        vals = [
            -math.inf if i in chosen else float((sim[:, i] - cover).clamp(min=0).sum() + weight[i])
            for i in range(N)
        ]
        chosen.append(vals.index(max(vals)))
        cover = torch.maximum(cover, sim[chosen[-1]])
    assert got.tolist() == sorted(chosen)


def test_scope_batch_split_keeps_the_official_share_per_image(tiny):
    x = tiny_inputs(tiny, batch=2, seed=28)
    split = pruned_run(tiny, x, SCOPE(visual_token_num=25, batch_split=True))[0].events[0]
    assert split.tokens_after == [12, 12]  # int(25 / 2) each, as the official forward at batch 2
    for b in range(2):
        alone = {k: v[b : b + 1] for k, v in x.items()}
        solo = pruned_run(tiny, alone, SCOPE(visual_token_num=25, batch_split=True))[0].events[0]
        assert solo.tokens_after == [25]  # batch 1: the whole budget
        fewer = pruned_run(tiny, alone, SCOPE(visual_token_num=12))[0].events[0]
        assert torch.equal(split.kept[b], fewer.kept[0])


# ---- shared behaviour ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["visionzip", "holov", "scope"])
@pytest.mark.parametrize("keep", [1, 17, 143])
def test_budgets_are_exact(tiny, name, keep):
    x = tiny_inputs(tiny, batch=2, seed=26)
    run, h0 = pruned_run(tiny, x, method_class(name)(visual_token_num=keep))
    (event,) = run.events
    assert event.stage.is_encoder and event.tokens_before == [N, N] and event.tokens_after == [keep, keep]
    assert h0.shape[1] == x["input_ids"].shape[1] - (N - keep)
    assert all(len(set(k.tolist())) == keep for k in event.kept)


@pytest.mark.parametrize(("cls", "budgets"), [(VisionZip, (162, 108, 54)), (HoloV, None), (SCOPE, None)])
def test_presets(cls, budgets):
    for i, budget in enumerate((192, 128, 64)):
        method = cls.preset("llava-1.5", budget)
        schedule = method.schedule()
        assert schedule.visual_token_num == budget and schedule.layer_list == ()
        assert method.average_tokens(32, 576) == budget
        if budgets is not None:
            assert budget - method.contextual_count(budget) == budgets[i]
    with pytest.raises(ValueError, match="unknown model family 'qwen2-vl'"):
        cls.preset("qwen2-vl", 64)
    with pytest.raises(ValueError, match="has no mode 'wo_ve'"):
        cls.preset("llava-1.5", 64, mode="wo_ve")


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="visual_token_num must be >= 1"):
        SCOPE(visual_token_num=0)
    with pytest.raises(ValueError, match="contextual must lie in 0..10"):
        VisionZip(visual_token_num=10, contextual=11)
    with pytest.raises(ValueError, match="feature_layer -1"):
        VisionZip(feature_layer=-1)
    with pytest.raises(ValueError, match="crops must lie in 1.."):
        HoloV(crops=0)
    with pytest.raises(ValueError, match="combine must be"):
        SCOPE(combine="max")
    with pytest.raises(TypeError, match="unexpected keyword argument 'layer_list'"):
        HoloV(layer_list=(2,), image_token_list=(8,))
    with pytest.raises(ValueError, match="needs visual_token_num"):
        VisionZip(visual_token_num=None)


# ---- Compose -------------------------------------------------------------------------------------------


def test_compose_visionzip_then_trio_generates_and_records_both_stages(tiny):
    x = tiny_inputs(tiny, batch=2, seed=27)
    method = Compose(VisionZip(visual_token_num=64), trio_vlm.TRIO(layer_list=[2], image_token_list=[20]))
    assert method.name == "visionzip+trio"
    assert (method.schedule().visual_token_num, method.schedule().layer_list) == (64, (2,))
    with torch.no_grad(), trio_vlm.apply(tiny, method) as run:
        ids = tiny.generate(**x, max_new_tokens=4, do_sample=False)
    assert ids.shape == (2, x["input_ids"].shape[1] + 4)
    encoder, llm = run.events
    assert (encoder.stage.key, llm.stage.key) == ("encoder", 2)
    assert encoder.tokens_after == [64, 64] and llm.tokens_after == [20, 20]
    solo = pruned_run(tiny, x, VisionZip(visual_token_num=64))[0].events[0]
    for b in range(2):
        assert torch.equal(encoder.kept[b], solo.kept[b])
        assert torch.equal(llm.candidates[b], encoder.kept[b])
        assert set(llm.kept[b].tolist()) <= set(encoder.kept[b].tolist())


def test_compose_validates_the_merged_schedule():
    trio = trio_vlm.TRIO(layer_list=[2], image_token_list=[50])
    with pytest.raises(ValueError, match="non-increasing"):
        Compose(VisionZip(visual_token_num=40), trio)
    with pytest.raises(ValueError, match="has no encoder stage"):
        Compose(trio, trio)
    with pytest.raises(ValueError, match="has no LLM stages"):
        Compose(VisionZip(), SCOPE())
    assert (
        Compose(
            VisionZip(), trio_vlm.TRIO(layer_list=[1], image_token_list=[8], position_mode="original")
        ).position_convention()
        == "original"
    )
