"""The lmms-eval plugin, without lmms-eval installed: generate_until on fake requests, and its entry point."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from trio_vlm.bundled import bundled_image_path, save_tiny_checkpoint
from trio_vlm.eval.reading.images import expand_to_square
from trio_vlm.generation import generate_answer, generation_kwargs
from trio_vlm.integrations import lmms_eval as plugin
from trio_vlm.methods.trio import TRIO
from trio_vlm.presets import ModelShape
from trio_vlm.prompts import prompt_for
from trio_vlm.testbed import bundled_model_dir

HAS_LMMS = importlib.util.find_spec("lmms_eval") is not None


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> plugin.TrioLlava:
    checkpoint = save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)
    return plugin.TrioLlava(
        pretrained=str(checkpoint), method="trio", budget="64", mode="w_ve", pad_square="true"
    )


def request(context: str, gen: dict, doc_id: int) -> SimpleNamespace:
    """What lmms-eval passes: an Instance whose args are (context, gen_kwargs, doc_to_visual, doc_id, task, split)."""
    return SimpleNamespace(args=(context, gen, lambda doc: doc["visuals"], doc_id, "fake_task", "test"))


def test_generate_until_matches_a_direct_pruned_answer(model: plugin.TrioLlava) -> None:
    image = Image.open(bundled_image_path()).convert("RGB").resize((60, 40))
    model.task_dict = {"fake_task": {"test": {0: {"visuals": [image]}, 1: {"visuals": []}}}}
    out = model.generate_until(
        [
            request("What colour is the shape?", {"max_new_tokens": 4, "until": ["</s>"]}, 0),
            request("Hi?", {}, 1),
        ]
    )
    assert len(out) == 2 and all(isinstance(text, str) for text in out)
    padded = expand_to_square(image, (122, 116, 104))  # CLIP's mean colour, as LLaVA pads
    direct = generate_answer(
        model.model,
        model.processor,
        padded,
        prompt_for("What colour is the shape?"),
        model.method,
        generation_kwargs(4),
    )
    assert out[0] == direct.text
    assert [(s.stage, s.after) for s in direct.stages] == [("encoder", 24), (3, 8)]  # TRIO pruned


@pytest.mark.parametrize("mode", ["w_ve", "wo_ve"])
def test_presets_are_fitted_to_the_model(mode: str) -> None:
    """Issue 11: ``mode=w_ve`` failed on the 16-layer testbed model (the 32-layer preset was used unscaled)."""
    model = plugin.TrioLlava(pretrained=str(bundled_model_dir()), method="trio", budget="64", mode=mode)
    shape = ModelShape("llava-1.5", 16, 576, 576)
    assert model.method == TRIO.preset(shape, 64, mode)
    assert model.method.average_tokens(16, 576) == 64


def test_stop_strings_cut_the_answer(model: plugin.TrioLlava) -> None:
    model.task_dict = {"fake_task": {"test": {0: {"visuals": []}}}}
    full = model.generate_until([request("Say something", {"max_new_tokens": 6}, 0)])[0]
    words = full.split()
    assert len(words) >= 2
    cut = model.generate_until([request("Say something", {"max_new_tokens": 6, "until": [words[1]]}, 0)])[0]
    assert cut == full[: full.index(words[1])]


def test_unsupported_requests_and_args(model: plugin.TrioLlava) -> None:
    with pytest.raises(NotImplementedError, match="generation tasks"):
        model.loglikelihood([])
    model.task_dict = {"fake_task": {"test": {0: {"visuals": ["clip.mp4"]}}}}
    with pytest.raises(ValueError, match="images only"):
        model.generate_until([request("What happens?", {}, 0)])
    with pytest.raises(ValueError, match="unexpected trio_llava model args: colour"):
        plugin.TrioLlava(colour="red")
    with pytest.raises(ValueError, match="batch_size must be 1"):
        plugin.TrioLlava(batch_size=4)


def test_entry_point_and_extra_are_declared() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    target = pyproject["project"]["entry-points"]["lmms_eval.models"]["trio_llava"]
    module, attr = target.split(":")
    assert getattr(importlib.import_module(module), attr) is plugin.manifest
    assert any(req.startswith("lmms-eval") for req in pyproject["project"]["optional-dependencies"]["lmms"])


@pytest.mark.skipif(not HAS_LMMS, reason="lmms-eval is not installed")
def test_manifest_with_lmms_eval() -> None:  # pragma: no cover - only where lmms-eval is installed
    manifest = plugin.manifest()
    assert manifest.model_id == "trio_llava"
    assert manifest.simple_class_path == "trio_vlm.integrations.lmms_eval.TrioLlava"
