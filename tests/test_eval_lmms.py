"""The lmms-eval plugin's classes on lmms-eval-shaped requests (lmms-eval itself need not be installed: its
evaluator is run in test_lmms_evaluator.py): every family, batching, the CLI's method options as model args,
the family-specific model names, the install check and the entry point."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from trio_vlm.bundled import bundled_image_path, save_tiny_checkpoint
from trio_vlm.eval.reading.images import expand_to_square, mean_colour
from trio_vlm.generation import generate_answer, generation_kwargs
from trio_vlm.integrations import lmms_eval as plugin
from trio_vlm.methods.trio import TRIO
from trio_vlm.presets import ModelShape, shape_of
from trio_vlm.prompts import FAMILY_CONV_MODES, prompt_for
from trio_vlm.testbed import bundled_model_dir
from trio_vlm.testing.checkpoints import FAMILIES, save_family_checkpoint
from trio_vlm.testing.eval_fixtures import draw_image

HAS_LMMS = importlib.util.find_spec("lmms_eval") is not None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> plugin.TrioVLM:
    return plugin.TrioLlava(pretrained=str(checkpoint), method="trio", budget="64", mode="w_ve")


@pytest.fixture(scope="module")
def family_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: save_family_checkpoint(family, root / family, seed=2) for family in FAMILIES}


def request(context: str, gen: dict, doc_id: int, task: str = "fake_task") -> SimpleNamespace:
    """What lmms-eval passes: an Instance whose args are (context, gen_kwargs, doc_to_visual, doc_id, task, split)."""
    return SimpleNamespace(args=(context, gen, lambda doc: doc["visuals"], doc_id, task, "test"))


def test_generate_until_matches_a_direct_pruned_answer(model: plugin.TrioVLM) -> None:
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
    assert model.device == torch.device("cpu") and (model.rank, model.world_size) == (0, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_batched(family: str, family_checkpoints: dict[str, Path]) -> None:
    """The family-detecting model and the family's own name answer a batch of requests (two images of
    different sizes and a text-only one) as a hand-built prompt in the family's format does, one by one."""
    path = str(family_checkpoints[family])
    args = {"pretrained": path, "method": "trio", "budget": 64, "mode": "w_ve", "max_new_tokens": 3}
    auto = plugin.TrioVLM(**args, batch_size=3)
    named = {cls.family: cls for cls in plugin.MODEL_CLASSES}[family](**args, batch_size="1")
    images = [draw_image(1), draw_image(2, (28, 44))]
    docs = {0: {"visuals": [images[0]]}, 1: {"visuals": []}, 2: {"visuals": images[1]}}
    questions = ["What colour is the shape?", "Say hi.", "Is there a circle?"]
    requests = [
        request(f"<image>\n{q}" if i != 1 else q, {"until": ["\n\n"]}, i) for i, q in enumerate(questions)
    ]
    answers = []
    for lmm in (auto, named):
        lmm.task_dict = {"fake_task": {"test": docs}}
        answers.append(lmm.generate_until(requests))
    model, processor = auto.model, auto.processor
    assert auto.conv_mode == FAMILY_CONV_MODES[family] and auto.pad_square is (family == "llava-1.5")
    assert auto.method == TRIO.preset(shape_of(model), 64, "w_ve") == named.method
    want = []
    for i, question in enumerate(questions):
        image = {0: images[0], 2: images[1]}.get(i)
        if image is not None and family == "llava-1.5":
            image = expand_to_square(image, mean_colour(processor))
        prompt = prompt_for(question, FAMILY_CONV_MODES[family], processor, image=image is not None)
        method = auto.method if image is not None else None
        want.append(generate_answer(model, processor, image, prompt, method, generation_kwargs(3)).text)
    assert answers == [want, want]


def test_method_options_as_model_args(checkpoint: Path) -> None:
    """lmms-eval hands model args over as text (numbers already converted); the CLI's rules apply."""
    lmm = plugin.TrioVLM(
        pretrained=str(checkpoint),
        method="trio",
        layer_list="[2]",
        image_token_list="[16]",
        visual_token_num=96,
    )
    assert (lmm.method.layer_list, lmm.method.image_token_list, lmm.method.visual_token_num) == (
        (2,),
        (16,),
        96,
    )
    ratios = plugin.TrioVLM(
        pretrained=str(checkpoint), method="fastv", layer_list="[2]", image_token_ratio_list="[0.25]"
    )
    assert ratios.method.image_token_ratio_list == (0.25,)
    quirks = plugin.TrioVLM(pretrained=str(checkpoint), method="trio", budget=64, reference_quirks="true")
    assert quirks.method.reference_quirks is True and lmm.method.reference_quirks is False
    with pytest.raises(ValueError, match="layer_list must be strictly increasing"):
        plugin.TrioVLM(pretrained=str(checkpoint), layer_list="[3,2]", image_token_list="[8,4]")
    with pytest.raises(ValueError, match="visual_token_num sets the encoder stage, which mode wo_ve"):
        plugin.TrioVLM(pretrained=str(checkpoint), mode="wo_ve", visual_token_num=96)
    with pytest.raises(ValueError, match="vanilla prunes nothing"):
        plugin.TrioVLM(pretrained=str(checkpoint), method="vanilla", budget=64)
    with pytest.raises(ValueError, match="pad_square must be true, false or auto"):
        plugin.TrioVLM(pretrained=str(checkpoint), pad_square="maybe")
    assert (
        plugin.TrioVLM(pretrained=str(checkpoint), method="vanilla", pad_square="false").pad_square is False
    )


def test_family_names_take_only_their_family(checkpoint: Path) -> None:
    with pytest.raises(
        ValueError, match="trio_llava_next takes llava-next checkpoints; .* is llava-1.5 .*trio_llava"
    ):
        plugin.TrioLlavaNext(pretrained=str(checkpoint))
    with pytest.raises(ValueError, match="trio_qwen2_5_vl takes qwen2.5-vl checkpoints"):
        plugin.TrioQwen2_5_VL(pretrained=str(checkpoint))


def test_rank_and_world_from_the_launcher(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    lmm = plugin.TrioVLM(pretrained=str(checkpoint), method="vanilla", device="cpu")
    assert (lmm.rank, lmm.world_size) == (1, 2) and lmm.device == torch.device("cpu")


@pytest.mark.parametrize("mode", ["w_ve", "wo_ve"])
def test_presets_are_fitted_to_the_model(mode: str) -> None:
    """Issue 11: ``mode=w_ve`` failed on the 16-layer testbed model (the 32-layer preset was used unscaled)."""
    model = plugin.TrioLlava(pretrained=str(bundled_model_dir()), method="trio", budget="64", mode=mode)
    shape = ModelShape("llava-1.5", 16, 576, 576)
    assert model.method == TRIO.preset(shape, 64, mode)
    assert model.method.average_tokens(16, 576) == 64


def test_stop_strings_cut_the_answer(model: plugin.TrioVLM) -> None:
    model.task_dict = {"fake_task": {"test": {0: {"visuals": []}}}}
    full = model.generate_until([request("Say something", {"max_new_tokens": 6}, 0)])[0]
    words = full.split()
    assert len(words) >= 2
    cut = model.generate_until([request("Say something", {"max_new_tokens": 6, "until": [words[1]]}, 0)])[0]
    assert cut == full[: full.index(words[1])]


def test_unsupported_requests_and_args(model: plugin.TrioVLM) -> None:
    with pytest.raises(NotImplementedError, match="generation tasks"):
        model.loglikelihood([])
    model.task_dict = {"fake_task": {"test": {0: {"visuals": ["clip.mp4"]}}}}
    with pytest.raises(ValueError, match="images only"):
        model.generate_until([request("What happens?", {}, 0)])
    with pytest.raises(ValueError, match="unexpected trio_vlm model args: colour"):
        plugin.TrioVLM(colour="red")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        plugin.TrioVLM(batch_size=0)


def test_a_broken_lmms_eval_install_is_named() -> None:
    """lmms-eval 0.7.3 imports ``filelock._api``, gone in filelock 4: the plugin says so before any work."""
    installed = {"lmms_eval", "filelock"}
    versions = {"lmms-eval": "0.7.3", "filelock": "4.3.1"}

    def find_spec(name: str):
        return object() if name in installed else None

    problems = plugin.install_problems(find_spec=find_spec, version=versions.__getitem__)
    assert problems == [
        "filelock 4.3.1 has no filelock._api, which lmms-eval 0.7 imports (filelock 4 removed it)"
    ]
    with pytest.raises(
        ImportError, match=r"broken lmms-eval install .* pip install 'lmms-eval>=0.7.3,<0.8' 'filelock<4'"
    ):
        plugin.check_install(find_spec=find_spec, version=versions.__getitem__)
    installed.add("filelock._api")
    versions["lmms-eval"] = "0.6.1"
    assert plugin.install_problems(find_spec=find_spec, version=versions.__getitem__) == [
        "lmms-eval 0.6.1 is untested (tested: >=0.7.3,<0.8)"
    ]
    installed.discard("lmms_eval")  # not installed: nothing to check
    assert plugin.install_problems(find_spec=find_spec, version=versions.__getitem__) == []


def test_entry_point_and_extra_are_declared() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    target = pyproject["project"]["entry-points"]["lmms_eval.models"]["trio_vlm"]
    module, attr = target.split(":")
    assert getattr(importlib.import_module(module), attr) is plugin.manifests
    extra = pyproject["project"]["optional-dependencies"]["lmms"]
    low, high = plugin.TESTED_LMMS_EVAL
    assert f"lmms-eval>={low},<{high}" in extra and "filelock<4" in extra


@pytest.mark.skipif(not HAS_LMMS, reason="lmms-eval is not installed")
def test_manifests_with_lmms_eval() -> None:  # pragma: no cover - only where lmms-eval is installed
    from lmms_eval.models import get_model

    names = {m.model_id: m.simple_class_path for m in plugin.manifests()}
    assert names == {
        "trio_vlm": "trio_vlm.integrations.lmms_eval.TrioVLM",
        "trio_llava": "trio_vlm.integrations.lmms_eval.TrioLlava",
        "trio_llava_next": "trio_vlm.integrations.lmms_eval.TrioLlavaNext",
        "trio_qwen2_5_vl": "trio_vlm.integrations.lmms_eval.TrioQwen2_5_VL",
    }
    assert get_model("trio_qwen2_5_vl") is plugin.TrioQwen2_5_VL  # through lmms-eval's registry
