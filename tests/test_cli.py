"""The ``trio-vlm`` commands, model loading, prompts, schedule options and answer-file resume logic."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from helpers import user_error
from PIL import Image
from transformers import LlamaConfig, LlamaForCausalLM, LlavaForConditionalGeneration

from trio_vlm.bundled import bundled_image_path, default_model_dir, save_tiny_checkpoint
from trio_vlm.cli import answer_file
from trio_vlm.cli.main import build_parser, main
from trio_vlm.cli.options import method_request
from trio_vlm.llava_format import finished_keys, read_questions
from trio_vlm.loading import load_image, load_model_and_processor
from trio_vlm.method_options import parse_int_list
from trio_vlm.presets import ModelShape
from trio_vlm.prompts import prompt_for

TINY = ModelShape("llava-1.5", 6, 144, 144)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture
def question_set(tmp_path: Path) -> tuple[Path, Path]:
    """Three questions over two images; returns (question file, image folder)."""
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), "red").save(images / "a.png")
    Image.new("RGB", (30, 40), "blue").save(images / "b.png")
    rows = [
        {"question_id": 1, "image": "a.png", "text": "What colour is the image?"},
        {"question_id": 2, "image": "b.png", "text": "Is there a circle?"},
        {"question_id": 3, "image": "a.png", "text": "How many objects?"},
    ]
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return questions, images


def schedule_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["answer", *argv])


def answer_file_argv(
    checkpoint: Path, questions: Path, images: Path, answers: Path, *extra: str
) -> list[str]:
    return [
        "answer-file",
        "--model", str(checkpoint),
        "--question-file", str(questions),
        "--image-folder", str(images),
        "--answers-file", str(answers),
        "--max-new-tokens", "3",
        *extra,
    ]  # fmt: skip


# ---- schedule options ------------------------------------------------------------------------------------


def test_parse_int_list() -> None:
    assert parse_int_list("[16]", "--layer-list") == [16]
    assert parse_int_list("[2, 4]", "--layer-list", increasing=True) == [2, 4]
    for bad in ("16", "[1.5]", "[true]", '["2"]', "[2,", "{}"):
        with pytest.raises(ValueError, match="--layer-list must be a JSON list of integers"):
            parse_int_list(bad, "--layer-list")
    with pytest.raises(ValueError, match=">= 1"):
        parse_int_list("[0]", "--image-token-list")
    with pytest.raises(ValueError, match="strictly increasing"):
        parse_int_list("[3, 2]", "--layer-list", increasing=True)


def test_bad_layer_list_fails_before_loading(tmp_path: Path, capsys) -> None:
    argv = answer_file_argv(tmp_path / "nowhere", tmp_path / "q.jsonl", tmp_path, tmp_path / "a.jsonl")
    assert "increasing" in user_error(
        capsys, [*argv, "--layer-list", "[3,2]", "--image-token-list", "[32,16]"]
    )


def test_vanilla_excludes_schedules() -> None:
    assert method_request(schedule_args("--method", "vanilla")).build(TINY).name == "vanilla"
    with pytest.raises(ValueError, match="vanilla prunes nothing"):
        method_request(schedule_args("--method", "vanilla", "--budget", "64"))
    with pytest.raises(ValueError, match="wo_ve"):
        method_request(schedule_args("--mode", "wo_ve", "--visual-token-num", "96"))


def build_method(args: argparse.Namespace, model=None):
    request = method_request(args)
    return request.build(model) if model is not None else request.build()


def test_build_method_lists_presets_and_overrides() -> None:
    explicit = build_method(schedule_args("--layer-list", "[2]", "--image-token-list", "[16]"))
    assert (list(explicit.layer_list), list(explicit.image_token_list), explicit.visual_token_num) == (
        [2],
        [16],
        None,
    )
    preset = build_method(schedule_args("--budget", "64", "--mode", "w_ve"))
    assert (list(preset.layer_list), list(preset.image_token_list), preset.visual_token_num) == (
        [16],
        [32],
        96,
    )
    override = build_method(schedule_args("--budget", "64", "--mode", "w_ve", "--image-token-list", "[8]"))
    assert (list(override.layer_list), list(override.image_token_list)) == ([16], [8])
    fitted = build_method(schedule_args("--budget", "64", "--mode", "w_ve"), TINY)
    assert (list(fitted.layer_list), list(fitted.image_token_list), fitted.visual_token_num) == ([3], [8], 24)
    assert fitted.average_tokens(6, 144) == 16  # 64 of 576 is 16 of 144
    with pytest.raises(ValueError, match="w_ve with explicit lists needs visual_token_num"):
        build_method(schedule_args("--mode", "w_ve", "--layer-list", "[2]", "--image-token-list", "[16]"))


# ---- loading, prompts, images ----------------------------------------------------------------------------


def test_prompt_for() -> None:
    expected = "USER: <image>\nWhat is it? ASSISTANT:"
    assert prompt_for("What is it?", "llava_hf") == expected
    assert prompt_for("What is it?") == prompt_for("What is it?", "llava_v1")
    assert prompt_for("What is it?").startswith("A chat between a curious human")
    assert prompt_for("What is it?").endswith(" " + expected)
    with pytest.raises(ValueError, match="unknown conv mode 'chatml'"):
        prompt_for("What is it?", "chatml")


def test_load_image(tmp_path: Path) -> None:
    assert load_image(bundled_image_path()).mode == "RGB"
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_load_model_and_processor(checkpoint: Path) -> None:
    model, processor = load_model_and_processor(str(checkpoint), dtype="float32")
    assert isinstance(model, LlavaForConditionalGeneration) and not model.training
    assert processor.image_token == "<image>"


def test_unsupported_architecture(tmp_path: Path) -> None:
    config = LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=96
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llama")
    with pytest.raises(ValueError, match="unsupported model architecture LlamaForCausalLM"):
        load_model_and_processor(tmp_path / "llama")


# ---- question and answer files ---------------------------------------------------------------------------


def test_read_questions_reports_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"question_id": 1, "image": "a.png", "text": "hi"}\n\n{"question_id": 2, "text": "x"}\n')
    with pytest.raises(ValueError, match=r"q.jsonl:3: missing key\(s\) image"):
        read_questions(path)
    path.write_text('{"question_id": 1, "image": "a.png", "text": "hi"}\n{"question_id": 2,\n')
    with pytest.raises(ValueError, match=r"q.jsonl:2: malformed JSON"):
        read_questions(path)


def test_finished_keys_repairs_a_truncated_tail(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    good = json.dumps({"question_id": 7, "prompt": "q", "text": "a"}) + "\n"
    path.write_text(good + '{"question_id": 8, "pro')
    assert finished_keys(path) == {("7", "q")}
    assert path.read_text() == good
    path.write_text(good.rstrip("\n"))  # complete line, newline never written
    assert finished_keys(path) == {("7", "q")}
    assert path.read_text() == good
    path.write_text('{"broken\n' + good)
    with pytest.raises(ValueError, match="answers.jsonl:1: malformed answer line"):
        finished_keys(path)


def test_answer_file_writes_and_resumes(checkpoint, question_set, tmp_path, monkeypatch) -> None:
    questions, images = question_set
    answers = tmp_path / "out" / "answers.jsonl"
    generated, loads = [], []
    real_generate, real_load = answer_file.generate_answer, answer_file.load_model_and_processor
    monkeypatch.setattr(
        answer_file, "generate_answer", lambda *a: generated.append(a[3]) or real_generate(*a)
    )
    monkeypatch.setattr(
        answer_file, "load_model_and_processor", lambda *a, **k: loads.append(a) or real_load(*a, **k)
    )
    argv = answer_file_argv(checkpoint, questions, images, answers, "--method", "vanilla")

    assert main(argv) == 0
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["question_id"] for r in lines] == [1, 2, 3]
    assert lines[1]["prompt"] == "Is there a circle?"
    assert lines[0]["model_id"] == checkpoint.name
    assert lines[0]["metadata"]["schedule"]["method"] == "vanilla" and isinstance(lines[0]["text"], str)
    assert lines[0]["metadata"]["avg_visual_tokens"] == 144
    assert len({r["answer_id"] for r in lines}) == 3 and len(generated) == 3

    # Simulate a crash mid-write of the last answer: only that question is answered again.
    text = answers.read_text()
    answers.write_text(text[: text.rindex('{"question_id": 3') + 20])
    assert main(argv) == 0
    assert len(generated) == 4 and "How many objects?" in generated[-1]
    assert [json.loads(line)["question_id"] for line in answers.read_text().splitlines()] == [1, 2, 3]

    # Everything answered: the model is not even loaded.
    assert main(argv) == 0
    assert len(generated) == 4 and len(loads) == 2


def test_answer_file_missing_image(checkpoint, question_set, tmp_path, capsys) -> None:
    questions, images = question_set
    (images / "b.png").unlink()
    line = user_error(
        capsys, answer_file_argv(checkpoint, questions, images, tmp_path / "a.jsonl", "--method", "vanilla")
    )
    assert "image file not found" in line and "b.png" in line
    assert not (tmp_path / "a.jsonl").exists()


# ---- answer ----------------------------------------------------------------------------------------------


def test_answer_vanilla(checkpoint, capsys) -> None:
    argv = ["answer", "--model", str(checkpoint), "--image", str(bundled_image_path()), "--method", "vanilla"]
    assert main([*argv, "--question", "What colour?", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert (
        "method: vanilla" in out and "answer: " in out and "prefill time: " in out and "total time: " in out
    )
    assert "measured average: 144.00 visual tokens per decoder layer" in out


def test_answer_prints_tokens_kept(checkpoint, capsys) -> None:
    argv = ["answer", "--model", str(checkpoint), "--image", str(bundled_image_path()), "--question", "What?"]
    assert main([*argv, "--layer-list", "[2]", "--image-token-list", "[16]", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "after layer 2: 144 -> 16" in out and "prefill time: " in out


def test_answer_with_encoder_stage(checkpoint, capsys) -> None:
    argv = ["answer", "--model", str(checkpoint), "--image", str(bundled_image_path()), "--question", "What?"]
    lists = ["--layer-list", "[2]", "--image-token-list", "[16]", "--visual-token-num", "96"]
    assert main([*argv, *lists, "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "encoder: 144 -> 96" in out and "after layer 2: 96 -> 16" in out


def test_answer_bundled_default(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TRIO_VLM_CACHE", str(tmp_path))
    assert main(["answer", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "bundled tiny random LLaVA" in out and "(bundled)" in out
    assert "after layer 1: 144 -> " in out and "measured average: " in out


@pytest.mark.parametrize("mode", ["w_ve", "wo_ve"])
def test_answer_on_the_bundled_folder_equals_the_default(tmp_path, monkeypatch, capsys, mode) -> None:
    """Issue 11: with --model pointing at the bundled tiny model's folder, presets are fitted the same way as
    without --model (the old code used the 32-layer preset unscaled there: "layer_list entry 15 is out of
    range")."""
    monkeypatch.setenv("TRIO_VLM_CACHE", str(tmp_path))
    common = ["--max-new-tokens", "2", "--budget", "64", "--mode", mode, "--json"]
    assert main(["answer", *common]) == 0
    default = json.loads(capsys.readouterr().out)
    folder = str(default_model_dir())
    assert main(["answer", "--model", folder, "--image", str(bundled_image_path()), *common]) == 0
    explicit = json.loads(capsys.readouterr().out)
    assert explicit["method"] == default["method"] and explicit["visual_tokens"] == default["visual_tokens"]
    method = method_request(schedule_args("--budget", "64", "--mode", mode)).build(TINY)
    assert explicit["avg_visual_tokens"] == pytest.approx(method.average_tokens(6, 144))


def test_answer_file_records_tokens_kept(checkpoint, question_set, tmp_path) -> None:
    questions, images = question_set
    answers = tmp_path / "answers.jsonl"
    lists = ["--layer-list", "[2]", "--image-token-list", "[16]"]
    assert main(answer_file_argv(checkpoint, questions, images, answers, *lists)) == 0
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    assert len(lines) == 3
    meta = lines[0]["metadata"]
    assert meta["schedule"]["layer_list"] == [2] and meta["schedule"]["image_token_list"] == [16]
    assert meta["visual_tokens"] == [{"call": 0, "stage": 2, "before": 144, "after": 16}]
    assert meta["prefill_seconds"] > 0
