"""LLM-side baselines (FastV, PDrop, SparseVLM, DART): non-default options, batches, ranking dtype and presets;
the random/uniform sanity baselines. The defaults against the official code: tests/test_official_fidelity.py."""

from __future__ import annotations

import argparse

import pytest
import torch
from helpers import logits_of, prompt_embeds, run_layers
from official_reference import cluster_and_merge_plain, eager_weights

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


# ---- SparseVLM --------------------------------------------------------------------------------------
def sparsevlm_stage(model_eager, layer, h_in, h_out, pos, valid, vis, text, keep):
    """One drop of SparseVLM's ``raters="per_stage", clusters="centre_slot"`` options written plainly: raters
    from the scoring layer's input, that layer's rater→image attention, top-k, then recycling of the top 30%+1
    dropped into n/10+1 density-peak clusters, each written into its centre's slot."""
    v, t = h_in[0, vis], h_in[0, text]
    relevance = torch.softmax(v @ t.T, dim=1).mean(0)
    raters = text[relevance > relevance.mean()]
    attn = eager_weights(model_eager, layer, h_in, pos, valid)[0].mean(0)
    rel = attn[raters][:, vis].mean(0)
    kept = top(rel, keep)
    dropped = [i for i in range(vis.numel()) if i not in kept]
    n_rec = int(len(dropped) * 0.3) + 1
    rec = [dropped[i] for i in torch.topk(rel[dropped], n_rec).indices.tolist()]
    centres, merged = cluster_and_merge_plain(h_out[0, vis[rec]], int(n_rec / 10) + 1)
    slots = [rec[c] for c in centres]
    return rel, sorted(kept + slots), (vis[slots], merged)


def _clusters(n_dropped: int) -> int:
    return int((int(n_dropped * 0.3) + 1) / 10) + 1


def test_sparsevlm_per_stage_raters_and_centre_slots_equal_reference(tiny, tiny_eager):
    x = tiny_inputs(tiny, seed=23, suffix=9)
    layers, counts = (2, 4), (60, 20)
    method = SparseVLM(layer_list=layers, image_token_list=counts, raters="per_stage", clusters="centre_slot")
    with torch.no_grad():
        with trio_vlm.apply(tiny, method) as run:
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
        ref_centres, ref_merged = cluster_and_merge_plain(x, k)
        assert centres.tolist() == ref_centres
        torch.testing.assert_close(cluster_means(x, assignment, k), ref_merged)


# ---- ranking dtype -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_bf16():
    """The tiny model and its eager twin in bfloat16 (coarse enough that attention rows tie)."""
    return (
        tiny_llava(seed=0).to(torch.bfloat16),
        tiny_llava(seed=0, attn_implementation="eager").to(torch.bfloat16),
    )


@pytest.mark.parametrize(("cls", "scoring"), [(FastV, 1), (PDrop, 2)], ids=["fastv", "pdrop"])
def test_model_dtype_scores_round_like_the_official_attention(tiny_bf16, cls, scoring):
    """FastV reads layer K-1's attention, PDrop layer K's; the official code ranks those rows as bf16 tensors."""
    model, eager = tiny_bf16
    x = tiny_inputs(model, seed=37)
    x["pixel_values"] = x["pixel_values"].to(torch.bfloat16)
    events = {}
    for score_dtype in ("model", "float32"):
        method = cls(layer_list=[2], image_token_list=[40], score_dtype=score_dtype)
        with torch.no_grad(), trio_vlm.apply(model, method) as run:
            model(**x)
        events[score_dtype] = run.events[0]
    with torch.no_grad():
        h, pos, valid, vis = _prompt(model, x)
        h = run_layers(model, h, range(scoring), pos, valid)
        official = eager_weights(eager, scoring, h, pos, valid)[0, :, -1, vis].mean(0)  # bf16, as officially
    got, full = events["model"].scores[0], events["float32"].scores[0]
    assert official.dtype == torch.bfloat16
    torch.testing.assert_close(got, official.float(), rtol=1e-2, atol=1e-5)
    assert torch.equal(got.to(torch.bfloat16).float(), got)  # rounded to the model's dtype
    assert not torch.equal(full.to(torch.bfloat16).float(), full)  # float32 scores are not
    assert torch.unique(got).numel() < got.numel()  # so near-equal scores tie ...
    ranked = torch.sort(got, descending=True, stable=True).indices[:40]
    assert events["model"].kept[0].tolist() == sorted(ranked.tolist())  # ... and ties break by index


def test_sparsevlm_model_dtype_rounds_rater_scores(tiny_bf16):
    model, _ = tiny_bf16
    x = tiny_inputs(model, seed=38, suffix=9)
    x["pixel_values"] = x["pixel_values"].to(torch.bfloat16)
    scores = {}
    for score_dtype in ("model", "float32"):
        method = SparseVLM(layer_list=[2], image_token_list=[40], score_dtype=score_dtype)
        with torch.no_grad(), trio_vlm.apply(model, method) as run:
            model(**x)
        scores[score_dtype] = run.events[0].scores[0]
    assert torch.equal(scores["model"].to(torch.bfloat16).float(), scores["model"])
    assert not torch.equal(scores["float32"].to(torch.bfloat16).float(), scores["float32"])
    torch.testing.assert_close(scores["model"], scores["float32"], rtol=3e-2, atol=1e-4)


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
