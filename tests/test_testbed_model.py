"""The bundled testbed model: geometry, size, recorded accuracy, and the harness against a direct loop."""

from __future__ import annotations

import json

import pytest

import trio_vlm
from trio_vlm.cli.main import main
from trio_vlm.loading import load_model_and_processor, prompt_for
from trio_vlm.testbed import bundled_model_dir
from trio_vlm.testbed.evaluate import accuracy, evaluate
from trio_vlm.testbed.generator import benchmark
from trio_vlm.testbed.grid import run_grid
from trio_vlm.testbed.schedules import scaled_method


@pytest.fixture(scope="module")
def bundled():
    model, processor = load_model_and_processor(bundled_model_dir())
    log = json.loads((bundled_model_dir() / "training_log.json").read_text())
    return model, processor, log


def test_shipped_files_and_geometry(bundled) -> None:
    model, processor, log = bundled
    directory = bundled_model_dir()
    assert (directory / "model.safetensors").stat().st_size <= 20 * 2**20
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in directory.iterdir())
    vision, text = model.config.vision_config, model.config.text_config
    assert (vision.image_size, vision.patch_size, model.config.image_seq_length) == (336, 14, 576)
    assert (
        model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"
    )
    assert vision.num_hidden_layers >= 6 and text.num_hidden_layers >= 4
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert log["heldout"]["vanilla_accuracy"] >= 90.0
    assert log["train_seconds"] > 0 and log["settings"]["seed"] == 0


def test_reaches_recorded_vanilla_accuracy(bundled) -> None:
    model, processor, log = bundled
    heldout = log["heldout"]
    examples = benchmark(heldout["check_questions"], seed=heldout["seed"])
    measured = accuracy(evaluate(model, processor, examples, progress=False))
    assert abs(measured - heldout["check_accuracy"]) <= 2.0


def _direct_accuracy(model, processor, examples, method) -> float:
    """Plain loop: prompt, processor, one greedy token from ``generate`` inside ``trio_vlm.apply``."""
    correct = 0
    for ex in examples:
        inputs = processor(
            images=ex.image, text=prompt_for(ex.question.text, "vicuna_v1"), return_tensors="pt"
        )
        with trio_vlm.apply(model, method):
            out = model.generate(**inputs, max_new_tokens=1, do_sample=False)
        word = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :]).strip()
        correct += word == ex.question.answer
    return 100.0 * correct / len(examples)


def test_harness_matches_direct_loop(bundled) -> None:
    model, processor, _ = bundled
    examples = benchmark(8, seed=9)
    variants = [("trio", "w_ve"), ("random", None)]
    _, rows = run_grid(model, processor, examples, variants, [64], num_layers=16, progress=False)
    for (name, mode), row in zip(variants, rows):
        expected = _direct_accuracy(model, processor, examples, scaled_method(name, 64, mode))
        assert row.accuracy == pytest.approx(expected), (name, mode)
        assert row.schedule["average"] == pytest.approx(64, abs=1)


def test_demo_runs_offline(tmp_path, capsys) -> None:
    png = tmp_path / "demo.png"
    assert main(["demo", "--questions", "1", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "vanilla" in out and "trio (w/ VE)-64" in out and "576 -> 96 -> 32 tokens" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
