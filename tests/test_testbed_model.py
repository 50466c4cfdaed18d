"""The testbed harness against a plain loop, the demo, and (when shipped) the trained checkpoint."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers import LlavaForConditionalGeneration

import trio_vlm
from trio_vlm.cli.main import main
from trio_vlm.loading import load_model_and_processor
from trio_vlm.methods.request import MethodRequest
from trio_vlm.presets import ModelShape
from trio_vlm.prompts import prompt_for
from trio_vlm.testbed import bundled_model_dir
from trio_vlm.testbed.config import model_config
from trio_vlm.testbed.evaluate import accuracy, evaluate
from trio_vlm.testbed.generator import benchmark
from trio_vlm.testbed.grid import run_grid
from trio_vlm.testbed.train import TrainSettings, save
from trio_vlm.testbed.vocab import build_processor

TESTBED = ModelShape("llava-1.5", 16, 576, 576)


def scaled_method(name, budget, mode=None):
    return MethodRequest(name, budget, mode).build(TESTBED)


@pytest.fixture(scope="module")
def random_testbed(tmp_path_factory: pytest.TempPathFactory):
    """A randomly initialised testbed-architecture checkpoint (narrow widths, real geometry and depths)."""
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(model_config(vision_width=32, llm_width=32)).eval()
    with torch.no_grad():  # sharper random attention and logits, so answers differ between methods
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, 0.2)
    path = tmp_path_factory.mktemp("testbed")
    save(model, build_processor(), {"heldout": {}}, path)
    return path


def _direct_words(model, processor, examples, method) -> tuple[list[str], list[float]]:
    """Plain loop: prompt, processor, one greedy token from ``generate`` inside ``trio_vlm.apply``; and the
    % of each question's evidence patches among the tokens kept by the first and by the last drop."""
    words, evidence = [], []
    for ex in examples:
        inputs = processor(
            images=ex.image, text=prompt_for(ex.question.text, "vicuna_v1"), return_tensors="pt"
        )
        with trio_vlm.apply(model, method) as run:
            out = model.generate(**inputs, max_new_tokens=1, do_sample=False)
        words.append(processor.tokenizer.convert_ids_to_tokens(int(out[0, -1])) or "")
        if ex.question.evidence:
            shares = []
            for event in (run.events[0], run.events[-1]):
                kept = set(event.kept[0].tolist())
                shares.append(100 * sum(p in kept for p in ex.question.evidence) / len(ex.question.evidence))
            evidence.append(shares)
    return words, evidence


def test_harness_matches_direct_loop(random_testbed) -> None:
    model, processor = load_model_and_processor(random_testbed)
    examples = benchmark(6, seed=9)
    variants = [("trio", "w_ve"), ("random", None)]
    _, rows = run_grid(model, processor, examples, variants, [64], progress=False)
    for (name, mode), row in zip(variants, rows):
        method = scaled_method(name, 64, mode)
        predicted = [p.predicted for p in evaluate(model, processor, examples, method, progress=False)]
        direct, evidence = _direct_words(model, processor, examples, scaled_method(name, 64, mode))
        assert predicted == direct, (name, mode)
        assert row.evidence == pytest.approx(sum(e[0] for e in evidence) / len(evidence))
        assert row.evidence_last == pytest.approx(sum(e[1] for e in evidence) / len(evidence))
        expected = 100.0 * sum(w == ex.question.answer for w, ex in zip(direct, examples)) / len(examples)
        assert row.accuracy == pytest.approx(expected)
        assert row.schedule["average"] == pytest.approx(64, abs=1)


def test_demo_runs_offline(random_testbed, tmp_path, capsys) -> None:
    png = tmp_path / "demo.png"
    assert main(["demo", "--model", str(random_testbed), "--questions", "1", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "vanilla" in out and "trio (w/ VE)-64" in out and "576 -> 96 -> 32 tokens" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shipped_files_and_geometry() -> None:
    directory = bundled_model_dir()
    model, _ = load_model_and_processor(directory)
    log = json.loads((directory / "training_log.json").read_text())
    assert (directory / "model.safetensors").stat().st_size <= 20 * 2**20
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in directory.iterdir())
    vision, text = model.config.vision_config, model.config.text_config
    assert (vision.image_size, vision.patch_size, model.config.image_seq_length) == (336, 14, 576)
    assert (
        model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"
    )
    assert vision.num_hidden_layers >= 6 and text.num_hidden_layers >= 4
    assert log["heldout"]["vanilla_accuracy"] >= 90.0
    assert log["train_seconds"] <= 3600  # the budget: one hour on 2 CPU cores
    assert log["settings"] == dataclasses.asdict(TrainSettings())  # the defaults reproduce the shipped model


def test_random_selection_loses_at_64_tokens() -> None:
    """The testbed separates methods: random 64-token selection loses at least 15 points against vanilla."""
    model, processor = load_model_and_processor(bundled_model_dir())
    examples = benchmark(60)
    vanilla = accuracy(evaluate(model, processor, examples, progress=False))
    random64 = accuracy(evaluate(model, processor, examples, scaled_method("random", 64), progress=False))
    assert vanilla - random64 >= 15.0, (vanilla, random64)


def test_reaches_recorded_vanilla_accuracy() -> None:
    directory = bundled_model_dir()
    model, processor = load_model_and_processor(directory)
    heldout = json.loads((directory / "training_log.json").read_text())["heldout"]
    examples = benchmark(heldout["check_questions"], seed=heldout["seed"])
    measured = accuracy(evaluate(model, processor, examples, progress=False))
    assert abs(measured - heldout["check_accuracy"]) <= 2.0
