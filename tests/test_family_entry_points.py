"""Every model family through every command: saved tiny checkpoints of LLaVA-1.5, LLaVA-NeXT and Qwen2.5-VL
(model, processor and chat template, as ``save_pretrained`` writes them) answered by ``eval`` on all eight
benchmarks, by ``answer-file`` with ``--device-map auto``, by ``answer``, ``compare`` and ``profile``, and put
side by side by ``table``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import transformers
from device_split import load_split
from PIL import Image

from trio_vlm.cli.main import main
from trio_vlm.eval.benches import BENCHMARKS, LoadOptions, get_benchmark
from trio_vlm.eval.reading.answers import answer_key
from trio_vlm.eval.reading.images import expand_to_square, mean_colour
from trio_vlm.eval.reading.paths import resolve_files
from trio_vlm.generation import generate_answer, generation_kwargs
from trio_vlm.loading import load_config, load_model_and_processor
from trio_vlm.methods.trio import TRIO
from trio_vlm.presets import ARCHITECTURES, shape_of_config
from trio_vlm.processors import Qwen2_5_VLImageProcessor, has_torchvision
from trio_vlm.prompts import FAMILY_CONV_MODES, prompt_for
from trio_vlm.testing.checkpoints import FAMILIES, QWEN_CHAT_TEMPLATE, QWEN_MAX_PIXELS, save_family_checkpoint
from trio_vlm.testing.eval_fixtures import draw_image, make_fixture

QUESTIONS = {"gqa": 4, "mmbench": 4, "mmbench_cn": 4, "mme": 6, "pope": 6, "sqa": 3, "vqav2": 3, "textvqa": 3}
PADS = {"llava-1.5": True, "llava-next": False, "qwen2.5-vl": False}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: save_family_checkpoint(family, root / family, seed=1) for family in FAMILIES}


@pytest.fixture(scope="module")
def loaded(checkpoints: dict[str, Path]) -> dict[str, tuple[Any, Any]]:
    return {family: load_model_and_processor(path) for family, path in checkpoints.items()}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    for bench in BENCHMARKS:
        make_fixture(bench, root)
    return root


def preset(checkpoint: Path, budget: int = 64, mode: str | None = "w_ve") -> TRIO:
    return TRIO.preset(shape_of_config(load_config(checkpoint)), budget, mode)


def layers_from_stages(stages: list[dict[str, Any]], first: int, layers: int = 6) -> list[int]:
    """Visual tokens entering each decoder layer, read off the recorded drops: a drop after k layers
    changes layer k onwards; the encoder stage every layer."""
    out = []
    for layer in range(layers):
        count = first
        for stage in stages:
            if stage["stage"] == "encoder" or stage["stage"] <= layer:
                count = stage["after"]
        out.append(count)
    return out


def check_tokens(metadata: dict[str, Any]) -> None:
    stages, per_layer = metadata["visual_tokens"], metadata["tokens_per_layer"]
    assert stages, "TRIO dropped nothing"
    assert per_layer == layers_from_stages(stages, stages[0]["before"])
    assert metadata["avg_visual_tokens"] == pytest.approx(sum(per_layer) / len(per_layer))


def direct_answer(
    loaded_model: tuple[Any, Any], family: str, image: Image.Image | None, text: str, method, n: int
):
    """The answer built by hand: the family's reference prompt and image preparation, then generate."""
    model, processor = loaded_model
    if image is not None and PADS[family]:
        image = expand_to_square(image, mean_colour(processor))
    prompt = prompt_for(text, FAMILY_CONV_MODES[family], processor, image=image is not None)
    return generate_answer(
        model, processor, image, prompt, method if image is not None else None, generation_kwargs(n)
    )


# ---- eval -------------------------------------------------------------------------------------------------


# LLaVA-1.5 on every benchmark: test_eval_e2e.py (the bundled tiny checkpoint); here its POPE run checks the
# hand-built answers (LLaVA's padding) like the other families'.
CASES = [("llava-1.5", "pope")] + [(family, bench) for family in FAMILIES[1:] for bench in BENCHMARKS]


@pytest.mark.parametrize(("family", "bench"), CASES)
def test_eval_every_family_on_every_benchmark(family, bench, checkpoints, loaded, data, tmp_path) -> None:
    checkpoint = checkpoints[family]
    argv = [
        "eval",
        "--bench",
        bench,
        "--data",
        str(data),
        "--model",
        str(checkpoint),
        "--output",
        str(tmp_path),
    ]
    assert main([*argv, "--max-new-tokens", "2", "--method", "trio", "--budget", "64", "--mode", "w_ve"]) == 0
    report = json.loads((tmp_path / "scores.json").read_text())
    records = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert report["complete"] and len(records) == QUESTIONS[bench] == report["counts"]["answered"]
    run = report["run"]
    method = preset(checkpoint)
    assert run["family"] == family and run["conv_mode"] == FAMILY_CONV_MODES[family]
    assert run["pad_square"] is PADS[family]
    assert run["schedule"] == method.describe()
    assert run["setting"] == "w/ VE (64)"
    # the answers are the ones built by hand with the family's prompt format and image preparation
    bench_def = get_benchmark(bench)
    items = {item.key: item for item in bench_def.load(resolve_files(bench_def, data), LoadOptions())}
    for i, record in enumerate(records):
        item = items[answer_key(record)]
        image = item.load_image()
        meta = record["metadata"]
        assert meta["run"] == run
        if i < 2 or image is None:
            want = direct_answer(loaded[family], family, image, item.text, method, 2)
            assert record["text"] == want.text
            assert meta["visual_tokens"] == [s.to_dict() for s in want.stages]
        if image is None:  # a text-only ScienceQA question: asked without pruning
            assert bench == "sqa" and meta["visual_tokens"] == [] and meta["tokens_per_layer"] == []
            continue
        check_tokens(meta)
    measured = [r["metadata"]["avg_visual_tokens"] for r in records if r["metadata"]["avg_visual_tokens"]]
    assert report["timing"]["avg_visual_tokens_measured"] == pytest.approx(sum(measured) / len(measured))


def test_chat_template_wherever_the_checkpoint_has_one(checkpoints, loaded, data, tmp_path, capsys) -> None:
    """``--conv-mode chat_template`` on LLaVA-1.5 (a checkpoint with a chat template) formats the prompt with
    it; a LLaVA template on Qwen2.5-VL wraps its image tokens; a checkpoint without a template says so."""
    common = ["eval", "--bench", "pope", "--data", str(data), "--max-new-tokens", "2", "--method", "vanilla"]
    for family, conv_mode in (("llava-1.5", "chat_template"), ("qwen2.5-vl", "vicuna_v1")):
        out = tmp_path / family
        assert (
            main(
                [*common, "--model", str(checkpoints[family]), "--conv-mode", conv_mode, "--output", str(out)]
            )
            == 0
        )
        report = json.loads((out / "scores.json").read_text())
        assert report["run"]["conv_mode"] == conv_mode and report["counts"]["answered"] == 6
        first = json.loads((out / "answers.jsonl").read_text().splitlines()[0])
        question = json.loads((data / "pope" / "llava_pope_test.jsonl").read_text().splitlines()[0])
        model, processor = loaded[family]
        image = Image.open(data / "pope" / "val2014" / question["image"]).convert("RGB")
        if PADS[family]:
            image = expand_to_square(image, mean_colour(processor))
        prompt = prompt_for(question["text"], conv_mode, processor)
        assert ("ASSISTANT:" in prompt) and (("<|vision_start|>" in prompt) == (family == "qwen2.5-vl"))
        want = generate_answer(model, processor, image, prompt, None, generation_kwargs(2))
        assert first["text"] == want.text
    from trio_vlm.bundled import save_tiny_checkpoint

    plain = save_tiny_checkpoint(tmp_path / "plain")  # no chat template
    argv = [*common, "--model", str(plain), "--conv-mode", "chat_template", "--output", str(tmp_path / "c")]
    assert main(argv) == 2
    assert "needs a processor that has a chat template" in capsys.readouterr().err


# ---- answer-file with --device-map auto --------------------------------------------------------------------


@pytest.fixture
def question_set(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    draw_image(1).save(images / "wide.png")
    draw_image(2, (28, 44)).save(images / "tall.png")
    rows = [
        {"question_id": 1, "image": "wide.png", "text": "What colour is the shape?"},
        {"question_id": 2, "image": "tall.png", "text": "Is there a circle?"},
    ]
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return questions, images


@pytest.mark.filterwarnings("ignore:The following device_map keys")
@pytest.mark.parametrize("family", FAMILIES)
def test_answer_file_with_device_map_auto(family, checkpoints, question_set, tmp_path, monkeypatch) -> None:
    """``--device-map auto`` reaches ``from_pretrained``; the model is spread over two devices with accelerate's
    hooks (forced on a CPU-only machine) and answers exactly as the whole model does."""
    questions, images = question_set
    checkpoint = checkpoints[family]
    model_cls = getattr(transformers, next(a for a, f in ARCHITECTURES.items() if f == family))
    original, seen = model_cls.from_pretrained, []

    def spread(path, device_map=None, **kwargs):
        seen.append(device_map)
        return (
            load_split(original, path, family, **kwargs) if device_map == "auto" else original(path, **kwargs)
        )

    monkeypatch.setattr(model_cls, "from_pretrained", spread)
    argv = ["answer-file", "--model", str(checkpoint), "--question-file", str(questions)]
    argv += ["--image-folder", str(images), "--max-new-tokens", "3", "--budget", "64", "--mode", "w_ve"]
    assert main([*argv, "--answers-file", str(tmp_path / "split.jsonl"), "--device-map", "auto"]) == 0
    assert main([*argv, "--answers-file", str(tmp_path / "whole.jsonl")]) == 0
    assert seen == ["auto", None]
    split, whole = (
        [json.loads(x) for x in (tmp_path / f).read_text().splitlines()]
        for f in ("split.jsonl", "whole.jsonl")
    )
    assert [r["text"] for r in split] == [r["text"] for r in whole]
    for got, want in zip(split, whole):
        meta = got["metadata"]
        assert meta["family"] == family and meta["schedule"] == preset(checkpoint).describe()
        assert meta["conv_mode"] == FAMILY_CONV_MODES[family] and meta["pad_square"] is PADS[family]
        assert meta["visual_tokens"] == want["metadata"]["visual_tokens"]
        assert meta["tokens_per_layer"] == want["metadata"]["tokens_per_layer"]
        check_tokens(meta)


# ---- answer, compare, profile -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_answer_compare_profile(family, checkpoints, tmp_path, capsys) -> None:
    checkpoint = checkpoints[family]
    image = tmp_path / "image.png"
    draw_image(4).save(image)
    model = ["--model", str(checkpoint), "--image", str(image)]
    assert main(["answer", *model, "--max-new-tokens", "2", "--budget", "64", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    method = preset(checkpoint, 64, None)
    assert answer["family"] == family and answer["conv_mode"] == FAMILY_CONV_MODES[family]
    assert answer["method"] == method.describe()
    check_tokens(answer)

    rows_file = tmp_path / "compare.json"
    assert (
        main(
            ["compare", *model, "--max-new-tokens", "2", "--methods", "trio,fastv", "--json", str(rows_file)]
        )
        == 0
    )
    capsys.readouterr()
    rows = {row["method"]: row for row in json.loads(rows_file.read_text())}
    assert set(rows) == {"vanilla", "trio", "fastv"} and all(r["error"] is None for r in rows.values())
    assert rows["trio"]["stages"] == [[s["stage"], s["before"], s["after"]] for s in answer["visual_tokens"]]
    assert rows["trio"]["answer"] == answer["answer"]
    assert rows["vanilla"]["avg_visual_tokens"] == answer["visual_tokens"][0]["before"]

    profile_file = tmp_path / "profile.json"
    assert (
        main(
            [
                "profile",
                *model,
                "--max-new-tokens",
                "2",
                "--budget",
                "64",
                "--warmup",
                "0",
                "--json-out",
                str(profile_file),
            ]
        )
        == 0
    )
    capsys.readouterr()
    profile = json.loads(profile_file.read_text())
    assert profile["method"] == method.describe()
    (trio_run,) = profile["runs"]["trio"]
    (vanilla_run,) = profile["runs"]["vanilla"]
    assert trio_run["visual_per_layer"] == answer["tokens_per_layer"]
    assert vanilla_run["visual_per_layer"] == [answer["visual_tokens"][0]["before"]] * 6
    # the text tokens (LLaVA-NeXT's row newlines among them) are in every layer, pruned or not
    text = [t - v for t, v in zip(trio_run["tokens_per_layer"], trio_run["visual_per_layer"])]
    assert len(set(text)) == 1 and text == [
        t - v for t, v in zip(vanilla_run["tokens_per_layer"], vanilla_run["visual_per_layer"])
    ]


# ---- table ---------------------------------------------------------------------------------------------------


def test_table_puts_families_side_by_side(checkpoints, data, tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    for family in FAMILIES:
        for method in (["--method", "vanilla"], ["--method", "trio", "--budget", "64", "--mode", "w_ve"]):
            out = runs / family / method[1]
            argv = ["eval", "--bench", "pope", "--data", str(data), "--model", str(checkpoints[family])]
            assert main([*argv, "--max-new-tokens", "1", "--output", str(out), *method]) == 0
    capsys.readouterr()
    assert main(["table", "--runs", str(runs), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    measured = [r for r in rows if r["Source"] == "measured"]
    assert [(r["Family"], r["Method"]) for r in measured] == [
        (family, method) for family in FAMILIES for method in ("Vanilla", "TRIO (Ours)")
    ]
    assert [r["Setting"] for r in measured] == ["Upper Bound (144)", "w/ VE (64)"] + [
        "Upper Bound (all)",
        "w/ VE (64)",
    ] * 2
    for family in FAMILIES:
        vanilla, trio = (r for r in measured if r["Family"] == family)
        pope = [
            json.loads((runs / family / m / "scores.json").read_text())["headline"]["value"]
            for m in ("vanilla", "trio")
        ]
        assert vanilla["POPE"] == f"{pope[0]:.1f}" and trio["POPE"] == f"{pope[1]:.1f}"
        expected = "–" if pope[0] == 0 else f"{100 * pope[1] / pope[0]:.1f}% (1/8)"
        assert trio["Average"] == expected
    # the paper's rows (LLaVA-1.5-7B) follow the LLaVA-1.5 rows only
    for i, row in enumerate(rows):
        if row["Source"] == "paper":
            assert rows[i - 1]["Source"] == "measured" and rows[i - 1]["Family"] == "llava-1.5"
    assert sum(r["Source"] == "paper" for r in rows) == 2


# ---- Qwen2.5-VL's processor without torchvision ---------------------------------------------------------


@pytest.mark.skipif(has_torchvision(), reason="torchvision is installed: the stock processor is used")
def test_qwen_processor_without_torchvision(checkpoints, loaded) -> None:
    """The stock Qwen2.5-VL processor needs torchvision for its video part; without it the loader builds the
    same processor without that part: the saved image processor (PIL backend), tokenizer and chat template,
    one ``<|image_pad|>`` per merged 2×2 patch group, and videos refused by name."""
    _, processor = loaded["qwen2.5-vl"]
    assert isinstance(processor, Qwen2_5_VLImageProcessor) and not hasattr(processor, "video_processor")
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert processor.chat_template == QWEN_CHAT_TEMPLATE
    saved = json.loads((checkpoints["qwen2.5-vl"] / "processor_config.json").read_text())
    assert saved["processor_class"] == "Qwen2_5_VLProcessor"  # what a real checkpoint names
    prompt = prompt_for("What is it?", "chat_template", processor)
    inputs = processor(text=prompt, images=draw_image(5, (60, 20)), return_tensors="pt")
    t, h, w = inputs["image_grid_thw"][0].tolist()
    assert (t, h % 2, w % 2) == (1, 0, 0) and h * w * 2 * 2 <= QWEN_MAX_PIXELS  # 2 px patches, within max
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == h * w // 4
    with pytest.raises(
        ValueError, match="video input needs the full Qwen2.5-VL processor: pip install torchvision"
    ):
        processor(text=prompt, videos=[[draw_image(5)] * 2])
