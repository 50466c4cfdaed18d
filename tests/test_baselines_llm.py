"""LLM-side baselines (FastV, PDrop, SparseVLM, DART) and the random/uniform sanity baselines against plain
re-implementations of the official rules, computed by hand on the tiny models."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import float_causal_mask, logits_of, prompt_embeds, run_layers
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

import trio_vlm
from trio_vlm.cli.options import add_method_arguments, method_request
from trio_vlm.methods.dart import DART
from trio_vlm.methods.fastv import FastV
from trio_vlm.methods.pdrop import PDrop
from trio_vlm.methods.registry import method_class
from trio_vlm.methods.sanity import Random, Uniform
from trio_vlm.methods.sparsevlm import SparseVLM
from trio_vlm.testing.tiny import tiny_inputs, tiny_llava

N_VISUAL = 144


# ---- plain reference pieces -------------------------------------------------------------------------
def _prompt(model, x):
    """Input embeddings, positions, validity and the visual positions of sample 0."""
    h = prompt_embeds(model, x)
    seq = h.shape[1]
    vis = (x["input_ids"][0] == model.config.image_token_id).nonzero().flatten()
    return h, torch.arange(seq)[None], torch.ones(1, seq, dtype=torch.bool), vis


def eager_weights(model_eager, layer: int, hidden, positions, valid) -> torch.Tensor:
    """(B, H, S, S) attention probabilities of ``layer`` from the eager model's own attention module."""
    lm = model_eager.model.language_model
    block = lm.layers[layer]
    _, weights = block.self_attn(
        hidden_states=block.input_layernorm(hidden),
        position_embeddings=lm.rotary_emb(hidden, positions),
        attention_mask=float_causal_mask(valid),
    )
    return weights


def top(scores: torch.Tensor, k: int) -> list[int]:
    return sorted(torch.topk(scores, k).indices.tolist())


def gather_run(model, hidden, keep_pos, positions, valid, layers, compact: bool, replace=None):
    """Keep sequence positions ``keep_pos`` (optionally overwriting rows ``replace = (rows, feats)`` first), then
    run ``layers`` with original or renumbered positions."""
    if replace is not None:
        hidden = hidden.clone()
        hidden[0, replace[0]] = replace[1]
    hidden, positions, valid = hidden[:, keep_pos], positions[:, keep_pos], valid[:, keep_pos]
    if compact:
        positions = torch.arange(keep_pos.numel())[None]
    return run_layers(model, hidden, layers, positions, valid), positions, valid


def keep_positions(seq: int, vis: torch.Tensor, kept_local: list[int]) -> torch.Tensor:
    keep = torch.ones(seq, dtype=torch.bool)
    keep[vis] = False
    keep[vis[kept_local]] = True
    return keep.nonzero().flatten()


def greedy_recompute(model, x, stages, compact: bool, steps: int) -> list[int]:
    """Greedy tokens from full no-cache recomputation: at each stage keep the recorded original visual indices
    (and every text / generated token)."""
    h0, _, _, vis = _prompt(model, x)
    embed = model.get_input_embeddings()
    n_layers = model.config.text_config.num_hidden_layers
    out: list[int] = []
    for _ in range(steps):
        h = torch.cat([h0, embed(torch.tensor([out], dtype=torch.long))], 1) if out else h0
        total = h.shape[1]
        pos, valid = torch.arange(total)[None], torch.ones(1, total, dtype=torch.bool)
        sel = torch.arange(total)
        start = 0
        for layer, kept in stages:
            h = run_layers(model, h, range(start, layer), pos, valid)
            keep = keep_positions(total, vis, kept)
            idx = torch.searchsorted(sel, keep)
            h, valid = h[:, idx], valid[:, idx]
            pos = torch.arange(idx.numel())[None] if compact else pos[:, idx]
            sel, start = keep, layer
        h = run_layers(model, h, range(start, n_layers), pos, valid)
        out.append(int(logits_of(model, h)[0, -1].argmax()))
    return out


# ---- FastV ------------------------------------------------------------------------------------------
def test_fastv_selection_logits_and_decode_equal_reference(tiny, tiny_eager):
    x = tiny_inputs(tiny, seed=21)
    k_layer, keep = 3, 37
    with torch.no_grad():
        with trio_vlm.apply(tiny, FastV(layer_list=[k_layer], image_token_list=[keep])) as run:
            got = tiny(**x).logits
            ids = tiny.generate(**x, max_new_tokens=4, do_sample=False)
        h, pos, valid, vis = _prompt(tiny, x)
        h_in = run_layers(tiny, h, range(k_layer - 1), pos, valid)
        scores = eager_weights(tiny_eager, k_layer - 1, h_in, pos, valid)[0, :, -1, vis].mean(0)
        kept = top(scores, keep)
        h_out = run_layers(tiny, h_in, [k_layer - 1], pos, valid)
        final, _, _ = gather_run(
            tiny, h_out, keep_positions(h.shape[1], vis, kept), pos, valid, range(k_layer, 6), compact=False
        )
        want = logits_of(tiny, final)
        decoded = greedy_recompute(tiny, x, [(k_layer, kept)], compact=False, steps=4)
    event = run.events[0]
    assert event.kept[0].tolist() == kept and event.tokens_after == [keep]
    torch.testing.assert_close(event.scores[0], scores, rtol=1e-4, atol=1e-6)
    assert got.shape == want.shape == (1, h.shape[1] - (N_VISUAL - keep), 96)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert ids[0, x["input_ids"].shape[1] :].tolist() == decoded


# ---- PDrop ------------------------------------------------------------------------------------------
def test_pdrop_two_stages_logits_and_decode_equal_reference(tiny, tiny_eager):
    x = tiny_inputs(tiny, seed=22)
    layers, counts = (1, 3), (50, 15)
    with torch.no_grad():
        with trio_vlm.apply(tiny, PDrop(layer_list=layers, image_token_list=counts)) as run:
            got = tiny(**x).logits
            ids = tiny.generate(**x, max_new_tokens=4, do_sample=False)
        h, pos, valid, vis = _prompt(tiny, x)
        h1 = run_layers(tiny, h, range(layers[0]), pos, valid)
        s1 = eager_weights(tiny_eager, layers[0], h1, pos, valid)[0, :, -1, vis].mean(0)  # the *next* layer
        kept1 = top(s1, counts[0])
        keep1 = keep_positions(h.shape[1], vis, kept1)
        h2, pos2, valid2 = gather_run(tiny, h1, keep1, pos, valid, range(layers[0], layers[1]), compact=True)
        vis2 = torch.arange(int(vis[0]), int(vis[0]) + counts[0])
        s2 = eager_weights(tiny_eager, layers[1], h2, pos2, valid2)[0, :, -1, vis2].mean(0)
        kept2_local = top(s2, counts[1])
        kept2 = [kept1[i] for i in kept2_local]
        keep2 = keep_positions(h2.shape[1], vis2, kept2_local)
        final, _, _ = gather_run(tiny, h2, keep2, pos2, valid2, range(layers[1], 6), compact=True)
        want = logits_of(tiny, final)
        decoded = greedy_recompute(tiny, x, [(layers[0], kept1), (layers[1], kept2)], compact=True, steps=4)
    assert [e.kept[0].tolist() for e in run.events if e.call == 0] == [kept1, kept2]
    torch.testing.assert_close(run.events[0].scores[0], s1, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(run.events[1].scores[0], s2, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert ids[0, x["input_ids"].shape[1] :].tolist() == decoded


# ---- SparseVLM --------------------------------------------------------------------------------------
def plain_cluster_and_merge(x: torch.Tensor, n_clusters: int) -> tuple[list[int], torch.Tensor]:
    """Density-peak kNN clustering written with loops (official ``cluster_and_merge`` without the noise)."""
    n, c = x.shape
    d = torch.stack([torch.stack([(x[i] - x[j]).norm() for j in range(n)]) for i in range(n)]) / math.sqrt(c)
    density = torch.stack([(-(torch.sort(d[i]).values[:n_clusters] ** 2).mean()).exp() for i in range(n)])
    dmax = d.max()
    parent = []
    for i in range(n):
        denser = [float(d[i, j]) for j in range(n) if density[j] > density[i]]
        parent.append(min(denser + [float(dmax)]))
    score = torch.tensor(parent) * density
    centres = torch.topk(score, n_clusters).indices.tolist()
    members: dict[int, list[int]] = {j: [] for j in range(n_clusters)}
    for i in range(n):
        j = centres.index(i) if i in centres else int(torch.argmin(d[centres, i]))
        members[j].append(i)
    merged = torch.stack([x[members[j]].sum(0) / (len(members[j]) + 1e-6) for j in range(n_clusters)])
    return centres, merged


def sparsevlm_stage(model_eager, layer, h_in, h_out, pos, valid, vis, text, keep):
    """One SparseVLM drop written plainly: raters from the scoring layer's input, that layer's rater→image
    attention, top-k, then recycling of the top 30%+1 dropped into n/10+1 density-peak clusters."""
    v, t = h_in[0, vis], h_in[0, text]
    relevance = torch.softmax(v @ t.T, dim=1).mean(0)
    raters = text[relevance > relevance.mean()]
    attn = eager_weights(model_eager, layer, h_in, pos, valid)[0].mean(0)
    rel = attn[raters][:, vis].mean(0)
    kept = top(rel, keep)
    dropped = [i for i in range(vis.numel()) if i not in kept]
    n_rec = int(len(dropped) * 0.3) + 1
    rec = [dropped[i] for i in torch.topk(rel[dropped], n_rec).indices.tolist()]
    centres, merged = plain_cluster_and_merge(h_out[0, vis[rec]], int(n_rec / 10) + 1)
    slots = [rec[c] for c in centres]
    return rel, sorted(kept + slots), (vis[slots], merged)


def _clusters(n_dropped: int) -> int:
    return int((int(n_dropped * 0.3) + 1) / 10) + 1


def test_sparsevlm_two_stages_with_recycling_equal_reference(tiny, tiny_eager):
    x = tiny_inputs(tiny, seed=23, suffix=9)
    layers, counts = (2, 4), (60, 20)
    with torch.no_grad():
        with trio_vlm.apply(tiny, SparseVLM(layer_list=layers, image_token_list=counts)) as run:
            got = tiny(**x).logits
            tiny.generate(**x, max_new_tokens=3, do_sample=False)
        h, pos, valid, vis = _prompt(tiny, x)
        seq = h.shape[1]
        text = torch.arange(int(vis[-1]) + 1, seq)
        h_in = run_layers(tiny, h, range(layers[0] - 1), pos, valid)
        h_out = run_layers(tiny, h_in, [layers[0] - 1], pos, valid)
        rel1, kept1, rep1 = sparsevlm_stage(
            tiny_eager, layers[0] - 1, h_in, h_out, pos, valid, vis, text, counts[0]
        )
        keep1 = keep_positions(seq, vis, kept1)
        n1 = len(kept1)
        h_in2, pos2, valid2 = gather_run(
            tiny, h_out, keep1, pos, valid, range(layers[0], layers[1] - 1), compact=True, replace=rep1
        )
        h_out2 = run_layers(tiny, h_in2, [layers[1] - 1], pos2, valid2)
        vis2 = torch.arange(int(vis[0]), int(vis[0]) + n1)
        text2 = torch.arange(int(vis2[-1]) + 1, h_in2.shape[1])
        rel2, kept2_local, rep2 = sparsevlm_stage(
            tiny_eager, layers[1] - 1, h_in2, h_out2, pos2, valid2, vis2, text2, counts[1]
        )
        keep2 = keep_positions(h_in2.shape[1], vis2, kept2_local)
        final, _, _ = gather_run(
            tiny, h_out2, keep2, pos2, valid2, range(layers[1], 6), compact=True, replace=rep2
        )
        want = logits_of(tiny, final)
    # each drop keeps its count plus one token per cluster (84 dropped -> 26 recycled -> 3 clusters, ...)
    assert run.events[0].tokens_after == [len(kept1)] == [counts[0] + _clusters(N_VISUAL - counts[0])]
    assert run.events[1].tokens_after == [len(kept2_local)] == [counts[1] + _clusters(len(kept1) - counts[1])]
    assert run.events[0].kept[0].tolist() == kept1
    assert run.events[1].kept[0].tolist() == [kept1[i] for i in kept2_local]
    torch.testing.assert_close(run.events[0].scores[0], rel1, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(run.events[1].scores[0], rel2, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_density_peak_clustering_equals_loop_reference():
    from trio_vlm.methods.density_peaks import cluster_means, density_peak_clusters

    g = torch.Generator().manual_seed(5)
    for n, k in ((7, 1), (26, 3), (40, 5), (13, 13)):
        x = torch.randn(n, 16, generator=g)
        centres, assignment = density_peak_clusters(x, k)
        ref_centres, ref_merged = plain_cluster_and_merge(x, k)
        assert centres.tolist() == ref_centres
        torch.testing.assert_close(cluster_means(x, assignment, k), ref_merged)


# ---- DART -------------------------------------------------------------------------------------------
def dart_reference(model, layer, h_in, h_out, pos, vis, keep, exact: bool) -> tuple[list[int], torch.Tensor]:
    """The official DART selection (set-ordered pivot loop) on layer K-1's keys and final-normed output."""
    lm = model.model.language_model
    block = lm.layers[layer]
    attn = block.self_attn
    normed = block.input_layernorm(h_in)
    shape = (*h_in.shape[:2], -1, attn.head_dim)
    k = attn.k_proj(normed).view(shape).transpose(1, 2)
    cos, sin = lm.rotary_emb(h_in, pos)
    _, k = apply_rotary_pos_emb(k, k, cos, sin)
    k = repeat_kv(k, attn.num_key_value_groups)  # as the official SDPA path returns them
    states = k.permute(0, 2, 1, 3).reshape(1, h_in.shape[1], -1)[0]
    start, length = int(vis[0]), vis.numel()
    l1 = states.norm(p=1, dim=-1)
    last = lm.norm(h_out)[0]
    image_idx = (l1[start : start + length].topk(4).indices + start).tolist()
    query_idx = (l1[start + length :].topk(4).indices + start + length).tolist()
    chosen = set(image_idx + query_idx)
    valid = set(range(start, start + length)) - set(image_idx)
    pivots = list(chosen)
    base, extra = divmod(keep - 4, len(pivots))
    for n, item in enumerate(pivots):
        quota = keep // 8 if not exact else base + (n < extra)
        pool = sorted(valid)
        sim = -F.cosine_similarity(last[item][None], last[pool], dim=-1)
        picks = [pool[i] for i in sim.topk(quota).indices.tolist()]
        chosen.update(picks)
        valid.difference_update(picks)
    chosen.difference_update(query_idx)
    return sorted(i - start for i in chosen), l1[start : start + length]


@pytest.mark.parametrize("exact", [True, False])
def test_dart_selection_and_logits_equal_reference(tiny, exact):
    x = tiny_inputs(tiny, seed=24)
    k_layer, keep = 2, 30
    with torch.no_grad():
        with trio_vlm.apply(
            tiny, DART(layer_list=[k_layer], image_token_list=[keep], exact_budget=exact)
        ) as run:
            got = tiny(**x).logits
        h, pos, valid, vis = _prompt(tiny, x)
        h_in = run_layers(tiny, h, range(k_layer - 1), pos, valid)
        h_out = run_layers(tiny, h_in, [k_layer - 1], pos, valid)
        kept, l1 = dart_reference(tiny, k_layer - 1, h_in, h_out, pos, vis, keep, exact)
        final, _, _ = gather_run(
            tiny, h_out, keep_positions(h.shape[1], vis, kept), pos, valid, range(k_layer, 6), compact=False
        )
        want = logits_of(tiny, final)
    event = run.events[0]
    assert event.kept[0].tolist() == kept
    assert event.tokens_after == [keep if exact else 4 + 8 * (keep // 8)]
    # the method skips GQA's key repetition, which multiplies every L1 norm by the group size
    groups = tiny.model.language_model.layers[k_layer - 1].self_attn.num_key_value_groups
    torch.testing.assert_close(event.scores[0] * groups, l1, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# ---- batches ----------------------------------------------------------------------------------------
def _left_padded_pair(model):
    a = tiny_inputs(model, prefix=3, suffix=9, seed=25)
    b = tiny_inputs(model, prefix=7, suffix=4, seed=26)
    width = max(a["input_ids"].shape[1], b["input_ids"].shape[1])

    def pad(t, value):
        return torch.cat([torch.full((1, width - t.shape[1]), value, dtype=t.dtype), t], 1)

    batch = {
        "input_ids": torch.cat([pad(a["input_ids"], 0), pad(b["input_ids"], 0)]),
        "attention_mask": torch.cat([pad(a["attention_mask"], 0), pad(b["attention_mask"], 0)]),
        "pixel_values": torch.cat([a["pixel_values"], b["pixel_values"]]),
    }
    # positions count real tokens only, as generate() sets them (DART's post-RoPE key norms depend on them)
    batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    return a, b, batch


@pytest.mark.parametrize(
    "make",
    [
        lambda: FastV(layer_list=[2], image_token_list=[40]),
        lambda: PDrop(layer_list=[1, 4], image_token_list=[60, 18]),
        lambda: SparseVLM(layer_list=[2, 4], image_token_list=[60, 20]),
        lambda: DART(layer_list=[2], image_token_list=[30]),
        lambda: Uniform(visual_token_num=20),
    ],
    ids=["fastv", "pdrop", "sparsevlm", "dart", "uniform"],
)
def test_left_padded_batch_equals_samples_alone(tiny, make):
    a, b, batch = _left_padded_pair(tiny)
    alone = []
    with torch.no_grad():
        for inp in (a, b):
            with trio_vlm.apply(tiny, make()) as run:
                logits = tiny(**inp).logits[0, -1]
            alone.append((run.events, logits))
        with trio_vlm.apply(tiny, make()) as run:
            both = tiny(**batch).logits[:, -1]
    for s in range(2):
        events, logits = alone[s]
        for e_batch, e_single in zip(run.events, events, strict=True):
            assert torch.equal(e_batch.kept[s], e_single.kept[0])
            torch.testing.assert_close(e_batch.scores[s], e_single.scores[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(both[s], logits, rtol=1e-4, atol=1e-4)


# ---- sanity baselines ----------------------------------------------------------------------------------
def test_random_is_seeded_and_keeps_top_priorities(tiny):
    x = tiny_inputs(tiny, batch=2, seed=27)

    def kept(seed: int) -> list[list[int]]:
        with torch.no_grad(), trio_vlm.apply(tiny, Random(visual_token_num=30, seed=seed)) as run:
            tiny(**x)
            tiny(**x)
        for e in run.events:
            assert e.stage.is_encoder and e.tokens_after == [30, 30]
            for s in range(2):
                assert e.kept[s].tolist() == top(e.scores[s], 30)
        return [e.kept[s].tolist() for e in run.events for s in range(2)]

    first = kept(0)
    assert kept(0) == first
    assert kept(1) != first
    assert len({tuple(k) for k in first}) == 4  # every image and call draws afresh


def test_uniform_is_a_strided_lattice_on_the_grid_and_strided_later(tiny):
    x = tiny_inputs(tiny, seed=28)
    side = 12
    with torch.no_grad():
        with trio_vlm.apply(tiny, Uniform(visual_token_num=16)) as run:
            tiny(**x)
        with trio_vlm.apply(tiny, Uniform(visual_token_num=20)) as run20:
            tiny(**x)
        with trio_vlm.apply(tiny, Uniform(layer_list=[2], image_token_list=[36])) as run_llm:
            tiny(**x)
    # 16 of 12x12: every third row and column, starting at the centre of the first stride
    assert run.events[0].kept[0].tolist() == [
        r * side + c for r in range(1, side, 3) for c in range(1, side, 3)
    ]
    # 20 = 4 rows x 5 columns at the centres of equal strips
    rows = [int((i + 0.5) * side / 4) for i in range(4)]
    cols = [int((j + 0.5) * side / 5) for j in range(5)]
    assert run20.events[0].kept[0].tolist() == [r * side + c for r in rows for c in cols]
    # an LLM stage on the whole image keeps the 2-D lattice (6x6 here)
    assert run_llm.events[0].kept[0].tolist() == [
        r * side + c for r in range(1, side, 2) for c in range(1, side, 2)
    ]


def test_uniform_lattice_counts_and_one_d_fallback():
    from trio_vlm.methods.sanity import lattice, strided

    for side in (12, 24):
        for k in range(1, side * side + 1, 7):
            idx = lattice(side, k)
            assert idx.numel() == k and torch.equal(idx, torch.unique(idx))
    assert strided(144, 36).tolist() == [int((i + 0.5) * 4) for i in range(36)]
    assert lattice(24, 64).tolist() == [r * 24 + c for r in range(1, 24, 3) for c in range(1, 24, 3)]


# ---- presets ------------------------------------------------------------------------------------------
def _sparsevlm_counts(counts):
    out, current = [], 576
    for c in counts:
        current = c + _clusters(current - c)
        out.append(current)
    return out


def _expected_average(name: str, budget: int) -> float:
    if name == "fastv":
        keep = round((32 * budget - 2 * 576) / 30)
        return (2 * 576 + 30 * keep) / 32
    if name == "pdrop":
        c = {192: (300, 200, 110), 128: (303, 110, 36), 64: (66, 30, 17)}[budget]
        return (2 * 576 + 4 * c[0] + 10 * c[1] + 16 * c[2]) / 32
    if name == "sparsevlm":
        c = _sparsevlm_counts({192: (300, 200, 110), 128: (303, 110, 36), 64: (66, 30, 17)}[budget])
        return (3 * 576 + 4 * c[0] + 9 * c[1] + 16 * c[2]) / 32
    if name == "dart":  # the same single drop as FastV (the budget is the average, not the kept count)
        return _expected_average("fastv", budget)
    return float(budget)


@pytest.fixture(scope="module")
def llava_shaped():
    """A tiny model with LLaVA-1.5-7B's depth (32 layers) and visual tokens (24x24 = 576)."""
    return tiny_llava(seed=1, grid=24, layers=32)


@pytest.mark.parametrize("name", ["fastv", "pdrop", "sparsevlm", "dart", "random", "uniform"])
def test_presets_give_the_documented_average(llava_shaped, name):
    cls = method_class(name)
    x = tiny_inputs(llava_shaped, seed=29)
    for budget in (192, 128, 64):
        method = cls.preset("llava-1.5", budget)
        with torch.no_grad(), trio_vlm.apply(llava_shaped, method) as run:
            llava_shaped(**x)
        per_layer, current, stages = [], 576, {e.layer_index: e.tokens_after[0] for e in run.events}
        for layer in range(32):
            current = stages.get(layer, current)
            per_layer.append(current)
        average = sum(per_layer) / 32
        assert average == pytest.approx(_expected_average(name, budget))
        assert run.average_tokens() == pytest.approx(average)  # the run's own measurement
        assert method.average_tokens(32, 576) == pytest.approx(average)  # the plan, merged clusters included
        if name != "sparsevlm":
            assert abs(average - budget) < 2
    assert cls.preset("llava-1.5", 64).schedule() == cls.preset("llava-1.5", 64, mode=None).schedule()


def test_dart_and_fastv_share_the_single_drop_preset():
    assert [FastV.preset("llava-1.5", b).image_token_list[0] for b in (192, 128, 64)] == [166, 98, 30]
    for b in (192, 128, 64):
        assert DART.preset("llava-1.5", b).schedule() == FastV.preset("llava-1.5", b).schedule()
    assert (
        Random.preset("llava-1.5", 128, mode="wo_ve").schedule() == FastV.preset("llava-1.5", 128).schedule()
    )


@pytest.mark.parametrize("name", ["fastv", "pdrop", "sparsevlm", "dart"])
def test_preset_errors_name_the_problem(name):
    cls = method_class(name)
    with pytest.raises(ValueError, match="has no mode 'w_ve'"):
        cls.preset("llava-1.5", 64, mode="w_ve")
    with pytest.raises(ValueError, match="unknown model family 'qwen'"):
        cls.preset("qwen", 64)
    with pytest.raises(TypeError, match="visual_token_num"):
        cls(visual_token_num=64)
    with pytest.raises(ValueError, match="position_mode must be one of"):
        cls(position_mode="shifted")
    with pytest.raises(ValueError, match="budget must be a positive integer"):
        cls.preset("llava-1.5", 0)


@pytest.mark.parametrize("name", ["pdrop", "sparsevlm", "trio"])
def test_unpublished_budgets_take_the_nearest_published_shape(name):
    """Budget 100 of a method published at 192/128/64: the 128 schedule's layers, counts fitted to 100."""
    cls = method_class(name)
    near, method = cls.preset("llava-1.5", 128), cls.preset("llava-1.5", 100)
    assert method.schedule().layer_list == near.schedule().layer_list
    published = near.average_tokens(32, 576)
    assert abs(method.average_tokens(32, 576) - 100) < abs(published - 128) + 1


def test_cli_builds_and_fits_the_baselines():
    parser = argparse.ArgumentParser()
    add_method_arguments(parser)
    small = trio_vlm.ModelShape("llava-1.5", 6, 144, 144)
    for name in ("fastv", "pdrop", "sparsevlm", "dart", "random", "uniform"):
        method = method_request(parser.parse_args(["--method", name, "--budget", "128"])).build(small)
        assert method.name == name
        method.schedule().validate(6)
        explicit = method_request(
            parser.parse_args(["--method", name, "--layer-list", "[2]", "--image-token-list", "[16]"])
        ).build(small)
        assert explicit.schedule().layer_list == (2,) and explicit.schedule().image_token_list == (16,)
