"""Issue 16: TRIO's fast probe captured whole by torch.compile (CUDA graphs on a GPU) selects exactly what the
eager probe selects. On this CPU the capture is checked with the ``aot_eager`` backend (AOTAutograd traces the
same graph inductor would compile, without generating code)."""

from __future__ import annotations

import logging

import pytest
import torch

import trio_vlm
from trio_vlm.methods import probe
from trio_vlm.testing.tiny import tiny_inputs


def padded(model):
    x = tiny_inputs(model, batch=2, seed=11)
    x["attention_mask"][1, :3] = 0  # left padding in sample 1
    return x


def test_the_compiled_probe_selects_what_the_eager_probe_selects(tiny):
    x = padded(tiny)
    runs = {}
    for mode in ("off", "aot_eager"):
        method = trio_vlm.TRIO(
            layer_list=[1, 3], image_token_list=[40, 12], visual_token_num=100, probe_compile=mode
        )
        with torch.no_grad(), trio_vlm.apply(tiny, method) as run:
            logits = tiny(**x).logits
            ids = tiny.generate(**x, max_new_tokens=3, do_sample=False, pad_token_id=0)
        runs[mode] = (logits, ids, run.events)
    (l0, i0, e0), (l1, i1, e1) = runs["off"], runs["aot_eager"]
    assert any("aot_eager" in key for key in probe._COMPILED)  # it was really captured
    assert torch.equal(i0, i1)
    torch.testing.assert_close(l1, l0, rtol=0, atol=1e-5)
    for a, b in zip(e0, e1, strict=True):
        for s in range(2):
            assert torch.equal(a.kept[s], b.kept[s])
            if not a.stage.is_encoder:
                torch.testing.assert_close(b.scores[s], a.scores[s], rtol=1e-5, atol=1e-7)


def test_a_failed_capture_falls_back_to_the_eager_probe(tiny, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(probe, "_COMPILED", {})
    monkeypatch.setattr(probe, "_FAILED", set())
    x = padded(tiny)
    kept = {}
    for mode in ("off", "inductor"):
        method = trio_vlm.TRIO(layer_list=[2], image_token_list=[16], probe_compile=mode)
        with torch.no_grad(), trio_vlm.apply(tiny, method) as run, caplog.at_level(logging.WARNING):
            tiny(**x)
        kept[mode] = [k.tolist() for k in run.events[0].kept]
    assert kept["inductor"] == kept["off"]
    assert "compiling TRIO's probe with inductor failed (no compiler here); running it eagerly" in caplog.text


def test_auto_compiles_only_on_a_gpu():
    assert probe.compile_backend("auto", torch.device("cpu")) is None
    assert probe.compile_backend("auto", torch.device("cuda")) == ("inductor", "reduce-overhead")
    assert probe.compile_backend("off", torch.device("cuda")) is None
    with pytest.raises(ValueError, match="probe_compile must be one of"):
        trio_vlm.TRIO(probe_compile="fast")
