"""``TRIO(reference_quirks=True)``: what the authors' Qwen2.5-VL and LLaVA-NeXT code selects, against plain
transcriptions of that code (ocy1/TRIO, see docs/families.md) written here, not through the method."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from family_reference import keep_positions, lm_call_inputs, logits_of, prunable_positions, run_layers
from helpers import merge_plain, plain_nms, reference_probe_saliency, window_global_plain
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

import trio_vlm
from trio_vlm.bundled import bundled_image_path, save_tiny_checkpoint
from trio_vlm.cli.main import build_parser, main
from trio_vlm.cli.options import method_request
from trio_vlm.methods.fixed import Vanilla
from trio_vlm.methods.request import MethodRequest
from trio_vlm.testing.tiny import tiny_inputs
from trio_vlm.testing.tiny_families import (
    NEXT_TILE_PX,
    next_inputs,
    qwen_inputs,
    tiny_llava_next,
    tiny_qwen25_vl,
)


@pytest.fixture(scope="module")
def qwen():
    return tiny_qwen25_vl(seed=1)


@pytest.fixture(scope="module")
def next_eager():
    return tiny_llava_next(seed=1, attn_implementation="eager")


@pytest.fixture(scope="module")
def next_sdpa():
    return tiny_llava_next(seed=1)


# ---- Qwen2.5-VL: probe layer L-1, embed_tokens as head, non-causal prefill after a drop ------------------
def _qwen_authors_saliency(model, hidden: torch.Tensor, layer_1based: int, positions: torch.Tensor):
    """``Qwen2_5_VLModel_X.layer_prune`` for one unpadded sample: the layer *before* the drop (0-based
    ``rank_layer - 1``) with a causal mask, final norm, ``embed_tokens`` as tied head, shifted logits, argmax
    pseudo-labels at shifted positions S-2..S-5, mean cross-entropy, L2 norm of the input gradient."""
    lm = model.model.language_model
    with torch.enable_grad():
        h = hidden.detach().clone().requires_grad_(True)
        out = run_layers(model, h, [layer_1based - 1], positions)
        logits = (lm.norm(out) @ lm.embed_tokens.weight.T).float()[0, :-1]
        rows = [logits.shape[0] - 1 - t for t in range(4)]
        loss = F.cross_entropy(logits[rows], logits[rows].detach().argmax(-1))
        (grad,) = torch.autograd.grad(loss, h)
    return grad[0].norm(dim=-1)


def _bidirectional_layers(model, hidden: torch.Tensor, layers, positions: torch.Tensor) -> torch.Tensor:
    """Decoder layers whose mask lets every token see every token (the reference's prefill after a drop:
    ``cache_position`` starts at the cache length, so ``arange(n) > cache_position`` is never true)."""
    lm = model.model.language_model
    pe = lm.rotary_emb(hidden, positions)
    mask = torch.zeros(1, 1, hidden.shape[1], hidden.shape[1], dtype=hidden.dtype)
    for i in layers:
        out = lm.layers[i](hidden, attention_mask=mask, position_embeddings=pe, position_ids=None)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


@pytest.mark.parametrize("probe", ["fast", "reference"])
def test_qwen_quirks_equal_the_authors_layer_prune(qwen, probe):
    x = qwen_inputs(qwen, images=[[(16, 16)]], seed=3)
    method = trio_vlm.TRIO(
        layer_list=[2, 4], image_token_ratio_list=[0.5, 0.5], probe=probe, reference_quirks=True
    )
    with torch.no_grad(), trio_vlm.apply(qwen, method) as run:
        got = qwen(**x).logits
    with torch.no_grad():
        seen = lm_call_inputs(qwen, x)
        h, pos = seen["inputs_embeds"], seen["position_ids"]
        seq = h.shape[1]
        vis = prunable_positions(qwen, x, h)
        h = run_layers(qwen, h, range(0, 2), pos)
        sal1 = _qwen_authors_saliency(qwen, h, 2, pos)
        kept1 = plain_nms(sal1[vis].numpy(), h[0, vis].numpy(), 32)  # int(0.5 · 64)
        keep1 = keep_positions(seq, vis, torch.tensor(kept1))
        h, pos = h[:, keep1], pos[..., keep1]  # original 3-D positions gathered
        h = _bidirectional_layers(qwen, h, range(2, 4), pos)
        vis2 = torch.searchsorted(keep1, vis[kept1])
        sal2 = _qwen_authors_saliency(qwen, h, 4, pos)
        kept2_local = plain_nms(sal2[vis2].numpy(), h[0, vis2].numpy(), 16)
        sel = torch.ones(h.shape[1], dtype=torch.bool)
        sel[vis2] = False
        sel[vis2[kept2_local]] = True
        h_after, pos_after = h[:, sel], pos[..., sel]
        want = logits_of(qwen, _bidirectional_layers(qwen, h_after, range(4, 6), pos_after))
        causal = logits_of(qwen, run_layers(qwen, h_after, range(4, 6), pos_after))
    assert run.events[0].kept[0].tolist() == kept1
    assert run.events[1].kept[0].tolist() == [kept1[i] for i in kept2_local]
    torch.testing.assert_close(run.events[0].scores[0], sal1[vis], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (got - causal).abs().max() > 1e-2  # the non-causal layers are visible in the logits


def test_qwen_default_is_the_paper_and_differs_from_the_quirks(qwen):
    x = qwen_inputs(qwen, images=[[(16, 16)]], seed=3)
    scores = {}
    for quirks in (False, True):
        method = trio_vlm.TRIO(layer_list=[2], image_token_ratio_list=[0.5], reference_quirks=quirks)
        with torch.no_grad(), trio_vlm.apply(qwen, method) as run:
            qwen(**x)
        scores[quirks] = run.events[0].scores[0]
    with torch.no_grad():
        seen = lm_call_inputs(qwen, x)
        h = run_layers(qwen, seen["inputs_embeds"], range(0, 2), seen["position_ids"])
        vis = prunable_positions(qwen, x, h)
        lm = qwen.model.language_model
        with torch.enable_grad():  # the paper: layer L (index 2), the model's own LM head
            p = h.detach().clone().requires_grad_(True)
            logits = logits_of(qwen, run_layers(qwen, p, [2], seen["position_ids"])).float()[0, :-1]
            rows = [logits.shape[0] - 1 - t for t in range(4)]
            loss = F.cross_entropy(logits[rows], logits[rows].detach().argmax(-1))
            (grad,) = torch.autograd.grad(loss, p)
    assert lm.embed_tokens.weight.data_ptr() != qwen.lm_head.weight.data_ptr()  # untied, as Qwen2.5-VL-7B
    torch.testing.assert_close(scores[False], grad[0].norm(dim=-1)[vis], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(scores[False], scores[True], rtol=1e-2)


def test_qwen_quirks_generate_with_encoder_and_llm_stages(qwen):
    """The reference crashes here (mask not pruned); the quirks reproduce its selections, not the crash."""
    x = qwen_inputs(qwen, images=[[(8, 12)]], seed=4)
    method = trio_vlm.TRIO.preset(qwen, 64, "w_ve", reference_quirks=True).replace(
        shallow_layer=1, deep_layer=-1, window=2
    )
    with torch.no_grad(), trio_vlm.apply(qwen, method):
        prefill = qwen(**x).logits[:, -1]
        out = qwen.generate(
            **x, max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
    torch.testing.assert_close(out.logits[0], prefill, rtol=1e-4, atol=1e-4)
    assert out.sequences.shape[1] == x["input_ids"].shape[1] + 3


# ---- LLaVA-NeXT: encoder budget per tile before unpadding ------------------------------------------------
def _next_authors_image_tokens(model, x, budget: int, window: int, shallow: int, deep: int):
    """``encode_images`` + ``prepare_inputs_labels_for_multimodal_x`` for one image: per tile (base and
    crops), window/global [CLS] selection of ``budget`` patches on the whole grid, dropped patches merged into
    their nearest kept one, then crops unpadded (mask and features alike) with a newline per row. Returns the
    packed image features and the kept tokens' indices in trio-vlm's numbering (base, then crop rows)."""
    size = tuple(int(v) for v in x["image_sizes"][0])
    tiles_h, tiles_w = get_anyres_image_grid_shape(size, model.config.image_grid_pinpoints, NEXT_TILE_PX)
    n_tiles = 1 + tiles_h * tiles_w
    tower = model.model.vision_tower(
        x["pixel_values"][0, :n_tiles], output_hidden_states=True, output_attentions=True
    )
    cls_shallow = tower.attentions[shallow][:, :, 0, 1:].mean(1)
    cls_deep = tower.attentions[deep][:, :, 0, 1:].mean(1)
    feats = model.model.multi_modal_projector(tower.hidden_states[-2][:, 1:])
    side = int(feats.shape[1] ** 0.5)
    mask = torch.zeros(n_tiles, side * side, dtype=torch.bool)
    merged = feats.clone()
    for t in range(n_tiles):
        chosen = window_global_plain(cls_shallow[t], cls_deep[t], budget, window)
        mask[t, chosen] = True
        merged[t, chosen] = merge_plain(feats[t], chosen)
    base_kept = mask[0].nonzero().flatten()
    grid = (
        merged[1:].view(tiles_h, tiles_w, side, side, -1).permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3)
    )
    grid_mask = mask[1:].view(tiles_h, tiles_w, side, side).permute(0, 2, 1, 3).flatten(0, 1).flatten(1, 2)
    grid, grid_mask = unpad_image(grid, size), unpad_image(grid_mask[None], size)[0]
    newline = model.model.image_newline
    rows = [torch.cat([grid[:, r][:, grid_mask[r]].T, newline[None]]) for r in range(grid.shape[1])]
    packed = torch.cat([merged[0, base_kept], *rows])
    crop_kept = grid_mask.flatten().nonzero().flatten() + side * side
    per_tile_cut = mask[1:].sum() - grid_mask.sum()
    return packed, torch.cat([base_kept, crop_kept]), int(per_tile_cut)


def test_next_encoder_quirk_equals_the_authors_per_tile_selection(next_eager):
    model = next_eager
    x = next_inputs(model, image_sizes=[[(33, 20)]], seed=5)  # 2×2 crops, 3 columns cut on each side
    method = trio_vlm.TRIO(
        layer_list=[],
        image_token_list=[],
        visual_token_num=24,
        shallow_layer=1,
        deep_layer=-2,
        window=4,
        reference_quirks=True,
    )
    with torch.no_grad(), trio_vlm.apply(model, method) as run:
        got = model(**x).logits
    with torch.no_grad():
        packed, kept, cut = _next_authors_image_tokens(model, x, 24, 4, 1, -2)
        embeds = lm_call_inputs(model, x)["inputs_embeds"][0]
        image = (x["input_ids"][0] == model.config.image_token_id).nonzero().flatten()
        prompt = torch.cat([embeds[: image[0]], packed, embeds[image[-1] + 1 :]])[None]
        want = logits_of(model, model.model.language_model(inputs_embeds=prompt).last_hidden_state)
    assert cut > 0  # unpadding removed kept tokens, as in the reference
    assert run.events[0].kept[0].tolist() == kept.tolist()
    assert run.events[0].tokens_after == [5 * 24 - cut]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# ---- LLaVA-NeXT: LLM stages prune only the first min(k, n) image tokens -----------------------------------
def test_next_llm_quirk_prunes_only_the_base_tile(next_sdpa):
    model = next_sdpa
    x = next_inputs(model, image_sizes=[[(20, 40)]], seed=6)  # base 64 + 8×16 crops (+ 8 newlines)
    method = trio_vlm.TRIO(layer_list=[2, 4], image_token_list=[30, 12], reference_quirks=True)
    with torch.no_grad(), trio_vlm.apply(model, method) as run:
        got = model(**x).logits
    with torch.no_grad():
        h = lm_call_inputs(model, x)["inputs_embeds"]
        seq, n_vis = h.shape[1], 192
        vis = prunable_positions(model, x, h)
        assert vis.numel() == n_vis
        ones = lambda n: torch.ones(1, n, dtype=torch.bool)  # noqa: E731
        h = run_layers(model, h, range(0, 2), torch.arange(seq)[None])
        span1 = vis[:64]  # min(576 → the base tile, n)
        sal1 = reference_probe_saliency(model, 2, h, torch.arange(seq)[None], ones(seq))[0]
        base1 = plain_nms(sal1[span1].numpy(), h[0, span1].numpy(), 30)
        kept1 = base1 + list(range(64, n_vis))
        keep1 = keep_positions(seq, vis, torch.tensor(kept1))
        h = run_layers(model, h[:, keep1], range(2, 4), torch.arange(keep1.numel())[None])
        span2 = torch.searchsorted(keep1, vis[base1])  # min(30, n): the 30 base tokens kept
        sal2 = reference_probe_saliency(model, 4, h, torch.arange(h.shape[1])[None], ones(h.shape[1]))[0]
        base2 = plain_nms(sal2[span2].numpy(), h[0, span2].numpy(), 12)
        sel = torch.ones(h.shape[1], dtype=torch.bool)
        sel[span2] = False
        sel[span2[base2]] = True
        h = h[:, sel]
        want = logits_of(model, run_layers(model, h, range(4, 6), torch.arange(h.shape[1])[None]))
    assert run.events[0].kept[0].tolist() == kept1
    assert run.events[1].kept[0].tolist() == [base1[i] for i in base2] + list(range(64, n_vis))
    assert run.events[1].tokens_after == [12 + 128]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_next_quirks_generate_with_both_stages(next_sdpa):
    x = next_inputs(next_sdpa, image_sizes=[[(33, 20)], [(16, 16)]], seed=7)
    method = trio_vlm.TRIO(
        layer_list=[3],
        image_token_list=[10],
        visual_token_num=24,
        shallow_layer=1,
        deep_layer=-2,
        window=4,
        reference_quirks=True,
    )
    with torch.no_grad(), trio_vlm.apply(next_sdpa, method) as run:
        ids = next_sdpa.generate(**x, max_new_tokens=2, do_sample=False)
    assert ids.shape[1] == x["input_ids"].shape[1] + 2
    encoder, llm = run.events[0], run.events[1]
    for b in range(2):  # the base tile keeps 24 (the whole budget), the LLM stage 10 of them; crops stay
        assert int((encoder.kept[b] < 64).sum()) == 24 and int((llm.kept[b] < 64).sum()) == 10
        assert llm.tokens_after[b] == encoder.tokens_after[b] - 14
        assert torch.equal(llm.kept[b][llm.kept[b] >= 64], encoder.kept[b][encoder.kept[b] >= 64])


# ---- the switch ---------------------------------------------------------------------------------------
def test_llava15_code_follows_the_paper_so_the_switch_changes_nothing(tiny):
    x = tiny_inputs(tiny, seed=8)
    runs = {}
    for quirks in (False, True):
        method = trio_vlm.TRIO.preset(tiny, 64, "w_ve", reference_quirks=quirks)
        with torch.no_grad(), trio_vlm.apply(tiny, method) as run:
            logits = tiny(**x).logits
        runs[quirks] = (logits, [e.kept[0].tolist() for e in run.events])
    assert runs[True][1] == runs[False][1]
    assert torch.equal(runs[True][0], runs[False][0])


def test_reference_quirks_is_a_validated_field():
    with pytest.raises(ValueError, match="reference_quirks"):
        trio_vlm.TRIO(reference_quirks="yes")
    method = MethodRequest("trio", 64, "w_ve", (("reference_quirks", True),)).build("qwen2.5-vl")
    assert method.reference_quirks is True
    assert method.describe()["reference_quirks"] is True
    assert trio_vlm.TRIO().reference_quirks is False


def test_cli_switch(tmp_path, capsys):
    args = build_parser().parse_args(["answer", "--budget", "64", "--mode", "w_ve", "--reference-quirks"])
    assert method_request(args).build("llava-next").reference_quirks is True
    with pytest.raises(ValueError, match="fastv has no option"):
        method_request(build_parser().parse_args(["answer", "--method", "fastv", "--reference-quirks"]))
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny", seed=0)
    argv = ["answer", "--model", str(checkpoint), "--image", str(bundled_image_path()), "--question", "What?"]
    argv += ["--budget", "64", "--mode", "w_ve", "--max-new-tokens", "3"]
    printed = []
    for extra in ([], ["--reference-quirks"]):
        assert main([*argv, *extra]) == 0
        lines = capsys.readouterr().out.splitlines()
        printed.append([line for line in lines if "time" not in line])
    methods = [next(line for line in lines if line.startswith("method: ")) for lines in printed]
    assert "reference_quirks=True" in methods[1] and "reference_quirks" not in methods[0]
    # LLaVA-1.5: the authors' code is the paper's algorithm, so the answer and the kept tokens are the same
    rest = [[line for line in lines if not line.startswith("method: ")] for lines in printed]
    assert rest[0] == rest[1] and any(line.startswith("answer: ") for line in rest[0])


# ---- Qwen2.5-VL input without mm_token_type_ids --------------------------------------------------------
@pytest.mark.parametrize(
    "method",
    [
        Vanilla(),
        trio_vlm.TRIO(layer_list=[2], image_token_ratio_list=[0.5]),
        trio_vlm.TRIO(
            layer_list=[2],
            image_token_ratio_list=[0.5],
            image_token_ratio=0.5,
            shallow_layer=1,
            deep_layer=-1,
            window=2,
            window_rule="capped",
        ),
    ],
)
def test_qwen_input_without_mm_token_type_ids_is_a_clear_error(qwen, method):
    x = qwen_inputs(qwen, images=[[(8, 12)]], seed=9)
    types = x.pop("mm_token_type_ids")
    with torch.no_grad(), trio_vlm.apply(qwen, method):
        with pytest.raises(ValueError, match="no mm_token_type_ids"):
            qwen(**x)
        with pytest.raises(ValueError, match="no mm_token_type_ids"):
            qwen.generate(**x, max_new_tokens=2, do_sample=False)
        logits = qwen(**x, mm_token_type_ids=types).logits  # the same input with them runs
        if isinstance(method, Vanilla):  # text alone needs no token types
            qwen(input_ids=x["input_ids"][:, :4])
    assert torch.isfinite(logits).all()
