"""The engine on LLaVA-NeXT and Qwen2.5-VL against hand-built references: keep-all, drops, decode, batches,
video, the NeXT tile mapping and Qwen's vision scores."""

from __future__ import annotations

import pytest
import torch
from family_reference import (
    keep_positions,
    lm_call_inputs,
    logits_of,
    prunable_positions,
    qwen_received_attention,
    run_layers,
)

import trio_vlm
from trio_vlm.adapters import adapter_for
from trio_vlm.methods.fixed import FixedSelection
from trio_vlm.methods.sanity import Random
from trio_vlm.testing.tiny_families import next_inputs, qwen_inputs, tiny_llava_next, tiny_qwen25_vl

FAMILIES = ("llava-next", "qwen2.5-vl")


@pytest.fixture(scope="module")
def models():
    return {"llava-next": tiny_llava_next(seed=1), "qwen2.5-vl": tiny_qwen25_vl(seed=1)}


def _single(family: str, model, seed: int = 0) -> dict[str, torch.Tensor]:
    """One prompt with two visual inputs (NeXT: two images, one cut by unpadding; Qwen: an image and a video)."""
    if family == "llava-next":
        return next_inputs(model, image_sizes=[[(20, 40), (33, 20)]], seed=seed)
    return qwen_inputs(model, images=[[(8, 12)]], videos=[[(4, 8, 8)]], seed=seed)


def _batch(family: str, model, seed: int = 0) -> dict[str, torch.Tensor]:
    if family == "llava-next":
        return next_inputs(model, image_sizes=[[(20, 40)], [(33, 20), (16, 16)]], seed=seed)
    return qwen_inputs(model, images=[[(8, 12)], [(12, 16)]], videos=[[], [(4, 8, 8)]], seed=seed)


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_all_schedule_is_identical_to_vanilla(family, models):
    model = models[family]
    x = _batch(family, model, seed=1)
    method = trio_vlm.TRIO(layer_list=[1, 3], image_token_list=(), image_token_ratio_list=[1.0, 1.0])
    with torch.no_grad():
        ref = model(**x).logits
        ref_ids = model.generate(**x, max_new_tokens=4, do_sample=False)
        with trio_vlm.apply(model, method) as run:
            got = model(**x).logits
            ids = model.generate(**x, max_new_tokens=4, do_sample=False)
    assert torch.equal(got, ref)
    assert torch.equal(ids, ref_ids)
    assert all(e.tokens_after == e.tokens_before for e in run.events)


@pytest.mark.parametrize("family", FAMILIES)
def test_prefill_logits_equal_hand_reference_after_two_drops(family, models):
    model = models[family]
    x = _single(family, model, seed=2)
    method = trio_vlm.TRIO(layer_list=[2, 4], image_token_list=[12, 5])
    with torch.no_grad():
        with trio_vlm.apply(model, method) as run:
            got = model(**x).logits
        seen = lm_call_inputs(model, x)
        h = seen["inputs_embeds"]
        seq = h.shape[1]
        prunable = prunable_positions(model, x, h)
        # Qwen2.5-VL gathers the original 3-D positions; LLaVA-NeXT renumbers 0..n-1 after each drop
        pos = seen["position_ids"] if family == "qwen2.5-vl" else torch.arange(seq)[None]
        h = run_layers(model, h, range(0, 2), pos)
        keep1 = keep_positions(seq, prunable, run.events[0].kept[0])
        h, pos = h[:, keep1], pos[..., keep1]
        if family == "llava-next":
            pos = torch.arange(keep1.numel())[None]
        h = run_layers(model, h, range(2, 4), pos)
        keep2 = keep_positions(seq, prunable, run.events[1].kept[0])
        sel = torch.searchsorted(keep1, keep2)
        h, pos = h[:, sel], pos[..., sel]
        if family == "llava-next":
            pos = torch.arange(sel.numel())[None]
        want = logits_of(model, run_layers(model, h, range(4, 6), pos))
    assert run.events[0].tokens_after[0] == 24 and run.events[1].tokens_after[0] == 10  # 2 inputs × count
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_matches_full_recompute(family, models):
    model = models[family]
    x = qwen_inputs(model, images=[[(8, 12)]], seed=3) if family == "qwen2.5-vl" else None
    if x is None:
        x = next_inputs(model, image_sizes=[[(20, 40)]], seed=3)
    kept = ((0, 2, 3, 5, 7, 8, 11, 13, 17, 19, 20, 23),)
    method = FixedSelection(layer_list=(2,), kept=kept)
    with torch.no_grad(), trio_vlm.apply(model, method):
        out = model.generate(
            **x, max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
        prompt = x["input_ids"].shape[1]
        for step, step_logits in enumerate(out.logits):
            full = {**x, "input_ids": out.sequences[:, : prompt + step]}
            extra = step
            full["attention_mask"] = torch.cat(
                [x["attention_mask"], torch.ones(1, extra, dtype=torch.long)], 1
            )
            if "mm_token_type_ids" in x:
                pad = torch.zeros(1, extra, dtype=x["mm_token_type_ids"].dtype)
                full["mm_token_type_ids"] = torch.cat([x["mm_token_type_ids"], pad], 1)
            recomputed = model(**full).logits[:, -1]
            torch.testing.assert_close(step_logits, recomputed, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_equals_singles(family, models):
    model = models[family]
    x = _batch(family, model, seed=4)
    method = trio_vlm.TRIO(layer_list=[2, 4], image_token_list=(), image_token_ratio_list=[0.5, 0.5])
    with torch.no_grad():
        with trio_vlm.apply(model, method) as run:
            batched = model(**x).logits[:, -1]
        for b in range(2):
            with trio_vlm.apply(model, method) as one:
                logits = model(**_take_sample(x, b)).logits[:, -1]
            torch.testing.assert_close(logits[0], batched[b], rtol=1e-4, atol=1e-4)
            for batched_event, single_event in zip(run.events, one.events, strict=True):
                assert torch.equal(batched_event.kept[b], single_event.kept[0])


def _take_sample(x: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    """Sample ``b`` of a left-padded batch on its own, padding removed."""
    valid = x["attention_mask"][b].bool()
    out = {
        key: x[key][b : b + 1][:, valid]
        for key in ("input_ids", "attention_mask", "mm_token_type_ids")
        if key in x
    }
    if "image_sizes" in x:  # LLaVA-NeXT: images of sample b
        counts = [1, 2]
        start = sum(counts[:b])
        out["pixel_values"] = x["pixel_values"][start : start + counts[b]]
        out["image_sizes"] = x["image_sizes"][start : start + counts[b]]
        return out
    image_grid, pixels = x["image_grid_thw"], x["pixel_values"]
    offsets = [0, *image_grid.prod(-1).cumsum(0).tolist()]
    out["image_grid_thw"] = image_grid[b : b + 1]
    out["pixel_values"] = pixels[offsets[b] : offsets[b + 1]]
    if b == 1:
        out["video_grid_thw"] = x["video_grid_thw"]
        out["pixel_values_videos"] = x["pixel_values_videos"]
        out["second_per_grid_ts"] = x["second_per_grid_ts"]
    return out


def test_video_input_runs_with_encoder_and_llm_stages(models):
    model = models["qwen2.5-vl"]
    x = qwen_inputs(model, images=[[]], videos=[[(4, 8, 12)]], seed=5)
    method = trio_vlm.TRIO(
        layer_list=[3],
        image_token_list=(),
        image_token_ratio=0.5,
        image_token_ratio_list=[0.5],
        shallow_layer=1,
        deep_layer=-1,
        window=2,
        window_rule="capped",
    )
    with torch.no_grad(), trio_vlm.apply(model, method) as run:
        ids = model.generate(**x, max_new_tokens=3, do_sample=False)
    assert ids.shape[1] == x["input_ids"].shape[1] + 3
    tokens = 2 * 4 * 6  # 2 temporal patches × 4×6 merged grid
    assert [e.tokens_before[0] for e in run.events] == [tokens, tokens // 2]
    assert [e.tokens_after[0] for e in run.events] == [tokens // 2, tokens // 4]


def test_qwen_vision_scores_equal_the_reference_computation(models):
    model = models["qwen2.5-vl"]
    x = qwen_inputs(model, images=[[(8, 12), (12, 8)]], seed=6)
    block_index = 1
    seen = {}

    def grab(module, args, kwargs):
        seen["hidden"], seen["kwargs"] = args[0], kwargs

    adapter = adapter_for(model)
    handle = model.model.visual.blocks[block_index].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**x)
    finally:
        handle.remove()
    adapter.on_vision_tower((), {"grid_thw": x["image_grid_thw"]})
    with torch.no_grad():
        got = adapter.cls_attention_from_input(
            model.model.visual.blocks[block_index], seen["hidden"], seen["kwargs"]
        )
        cos, sin = seen["kwargs"]["position_embeddings"]
        ref = qwen_received_attention(
            model.model.visual.blocks[block_index], seen["hidden"], seen["kwargs"]["cu_seqlens"], cos, sin
        )
    from transformers.vision_utils import get_vision_window_index

    window_index, _ = get_vision_window_index(x["image_grid_thw"], 2, 8, 2)
    ref = ref.view(-1, 4).mean(1)[torch.argsort(window_index)] / model.config.vision_config.num_heads
    torch.testing.assert_close(torch.cat(got), ref, rtol=1e-5, atol=1e-7)
    assert [g.numel() for g in got] == [24, 24]


@pytest.mark.parametrize("sizes", [[(33, 20)], [(16, 16)], [(20, 40), (40, 20)]])
def test_next_tile_mapping_without_image_sizes_matches_the_features(sizes, models):
    """As in generate(): images are encoded first, the forward gets no image_sizes; every crop token must map to
    the tile and patch whose projected feature it carries (also when two grids unpad to the same shape)."""
    model = models["llava-next"]
    adapter = adapter_for(model)
    x = next_inputs(model, image_sizes=[sizes], seed=7)
    handles = adapter.install_hooks()
    try:
        with torch.no_grad():
            feats = model.model.get_image_features(x["pixel_values"], x["image_sizes"], return_dict=True)
            adapter.begin_prefill({})
            seen = lm_call_inputs(
                model, {"input_ids": x["input_ids"], "mm_encoder_outputs": {"image": feats}}
            )
            projected = torch.cat(adapter._projected)
            embeds = seen["inputs_embeds"]
            kinds = adapter.visual_kinds(x["input_ids"], None)
            items = adapter.visual_layout(kinds, embeds, torch.arange(embeds.shape[1])[None, None])[0]
    finally:
        for h in handles:
            h.remove()
        adapter.end_prefill()
    assert len(items) == len(sizes)
    for item in items:
        assert torch.equal(embeds[0, item.seq_index], projected[item.vision_row, item.patch])
    assert torch.equal(torch.cat([i.seq_index for i in items]), prunable_positions(model, x, embeds))


def test_next_encoder_stage_is_per_tile_with_the_budget_split_by_size(models):
    model = models["llava-next"]
    x = next_inputs(model, image_sizes=[[(33, 20)]], seed=8)
    with torch.no_grad(), trio_vlm.apply(model, Random(visual_token_num=40, seed=1)) as run:
        model(**x)
    event = run.events[0]
    # 64 base tokens + 16×10 crop tokens over 4 crop tiles of 8×8 cut to 8×5 each: sizes 64, 40, 40, 40, 40
    assert event.tokens_before == [224] and event.tokens_after == [40]
    kept = event.kept[0]
    per_tile = [int((kept < 64).sum())]
    crop = kept[kept >= 64] - 64
    row, col = crop // 10, crop % 10
    for tile_row in range(2):
        for tile_col in range(2):
            inside = (row // 8 == tile_row) & ((col + 3) // 8 == tile_col)
            per_tile.append(int(inside.sum()))
    assert per_tile == [12, 7, 7, 7, 7]


def test_qwen_compact_positions_option(models):
    model = models["qwen2.5-vl"]
    x = qwen_inputs(model, images=[[(8, 12)]], seed=9)
    method = trio_vlm.TRIO(layer_list=[2], image_token_list=[6], position_mode="compact")
    with torch.no_grad():
        with trio_vlm.apply(model, method) as run:
            got = model(**x).logits
        seen = lm_call_inputs(model, x)
        h, pos = seen["inputs_embeds"], seen["position_ids"]
        h = run_layers(model, h, range(0, 2), pos)
        keep = keep_positions(h.shape[1], prunable_positions(model, x, h), run.events[0].kept[0])
        dropped_before = torch.cumsum(~torch.isin(torch.arange(h.shape[1]), keep), 0)
        pos = (pos - dropped_before)[..., keep]
        want = logits_of(model, run_layers(model, h[:, keep], range(2, 6), pos))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
