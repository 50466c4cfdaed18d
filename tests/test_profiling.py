"""Efficiency figures: analytic FLOPs cross-checked by FlopCounterMode, KV bytes read off the cache."""

import json

import torch
from helpers import float_causal_mask
from torch.utils.flop_counter import FlopCounterMode

import trio_vlm
from trio_vlm.profiling.flops import LMShape, prefill_flops, probe_flops
from trio_vlm.profiling.measure import profile_generate
from trio_vlm.testing.tiny import tiny_inputs


def test_exact_flops_equal_flop_counter_on_eager_layers(tiny_eager):
    lm = tiny_eager.model.language_model
    shape = LMShape.from_config(tiny_eager.config.text_config)
    for n in (7, 50):
        h = torch.randn(1, n, shape.hidden)
        pos = torch.arange(n)[None]
        pe = lm.rotary_emb(h, pos)
        mask = float_causal_mask(torch.ones(1, n, dtype=torch.bool))
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            for layer in lm.layers:
                h = layer(h, attention_mask=mask, position_embeddings=pe, position_ids=pos)
        assert counter.get_total_flops() == prefill_flops([n] * shape.layers, shape, "exact")


def test_fast_probe_flops_are_a_fraction_of_the_reference_and_positive(tiny):
    shape = LMShape.from_config(tiny.config.text_config)
    fast, ref = probe_flops(156, shape, kind="fast"), probe_flops(156, shape, kind="reference")
    assert 0 < fast < ref


def test_tokens_per_layer_follow_the_stages(tiny):
    """The run's measured tokens per layer: the visual tokens at the start, then what each drop left."""
    x = tiny_inputs(tiny, seed=31)
    with (
        torch.no_grad(),
        trio_vlm.apply(tiny, trio_vlm.TRIO(layer_list=[1, 3], image_token_list=[30, 10])) as run,
    ):
        tiny(**x)
    assert run.tokens_per_layer() == [144, 30, 30, 10, 10, 10]
    assert run.average_tokens() == (144 + 2 * 30 + 3 * 10) / 6
    with torch.no_grad(), trio_vlm.apply(tiny, trio_vlm.Vanilla()) as run:
        tiny(**x)
    assert run.tokens_per_layer() == [144] * 6 and run.events == []


def test_profile_reports_kv_bytes_of_the_cache_and_token_counts(tiny):
    x = tiny_inputs(tiny, seed=30)
    seq = x["input_ids"].shape[1]
    cfg = tiny.config.text_config
    per_token = 2 * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4  # K+V, fp32
    vanilla = profile_generate(tiny, x, None, max_new_tokens=3, warmup=0)
    assert vanilla.kv_bytes == cfg.num_hidden_layers * seq * per_token
    method = trio_vlm.TRIO(layer_list=[2], image_token_list=[20])
    pruned = profile_generate(tiny, x, method, max_new_tokens=3, warmup=0)
    assert pruned.visual_per_layer == [144, 144, 20, 20, 20, 20]
    kept = seq - 144 + 20
    assert pruned.kv_bytes == (2 * seq + 4 * kept) * per_token
    assert pruned.probe_flops > 0 and vanilla.probe_flops == 0
    assert pruned.flops_fastv < vanilla.flops_fastv
    assert pruned.new_tokens == vanilla.new_tokens == 3


def test_profile_cli_on_the_bundled_model(tmp_path, capsys):
    from trio_vlm.cli.main import main

    out = tmp_path / "p.json"
    assert (
        main(
            [
                "profile",
                "--layer-list",
                "[2]",
                "--image-token-list",
                "[16]",
                "--max-new-tokens",
                "2",
                "--warmup",
                "0",
                "--json-out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "| vanilla |" in text and "| trio |" in text
    data = json.loads(out.read_text())
    assert data["runs"]["trio"][0]["visual_per_layer"][2:] == [16] * 4
    assert data["sums"]["vanilla"]["kv_mb"] > data["sums"]["trio"]["kv_mb"]
