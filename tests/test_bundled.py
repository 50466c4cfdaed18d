"""The offline tiny processor, the cached tiny checkpoint and the bundled image."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

from trio_vlm import bundled
from trio_vlm.bundled import (
    build_tiny_processor,
    build_tiny_tokenizer,
    bundled_image_path,
    default_model_dir,
    save_tiny_checkpoint,
    tiny_vocab,
)
from trio_vlm.testing.tiny import IMAGE_TOKEN_ID

PROMPT = "USER: <image>\nWhat is the colour of the shape on the left? ASSISTANT:"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


def test_vocab_fits_tiny_model() -> None:
    vocab = tiny_vocab()
    assert len(vocab) <= 96
    assert [vocab[t] for t in ("<pad>", "<s>", "</s>", "<image>", "<unk>")] == [0, 1, 2, IMAGE_TOKEN_ID, 4]
    assert len(set(vocab.values())) == len(vocab)


def test_tokenizer_words_punctuation_and_bos() -> None:
    tok = build_tiny_tokenizer()
    ids = tok("USER: <image>\nWhat colour? ASSISTANT:")["input_ids"]
    vocab = tiny_vocab()
    expected = ["<s>", "user", ":", "<image>", "what", "colour", "?", "assistant", ":"]
    assert ids == [vocab[t] for t in expected]
    assert tok("zebra")["input_ids"] == [1, vocab["<unk>"]]
    assert tok.pad_token_id == 0 and tok.eos_token_id == 2
    assert tok.decode(ids, skip_special_tokens=True) == "user : what colour ? assistant :"


@pytest.mark.parametrize("size", [(336, 336), (500, 200)])
def test_processor_expands_image_to_144_tokens(size: tuple[int, int]) -> None:
    out = build_tiny_processor()(images=Image.new("RGB", size, "red"), text=PROMPT, return_tensors="pt")
    assert int((out["input_ids"] == IMAGE_TOKEN_ID).sum()) == 144
    assert tuple(out["pixel_values"].shape) == (1, 3, 24, 24)


def test_checkpoint_round_trip(checkpoint) -> None:
    files = {p.name for p in checkpoint.iterdir()}
    assert "model.safetensors" in files and "processor_config.json" in files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    image = Image.open(bundled_image_path())
    reloaded = AutoProcessor.from_pretrained(checkpoint)(images=image, text=PROMPT, return_tensors="pt")
    fresh = build_tiny_processor()(images=image, text=PROMPT, return_tensors="pt")
    assert torch.equal(reloaded["input_ids"], fresh["input_ids"])
    assert torch.equal(reloaded["pixel_values"], fresh["pixel_values"])
    model = LlavaForConditionalGeneration.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        logits = model(**reloaded).logits
    assert logits.shape == (1, reloaded["input_ids"].shape[1], 96)


def test_default_model_dir_builds_once(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIO_VLM_CACHE", str(tmp_path))
    calls = []
    real = bundled.save_tiny_checkpoint
    monkeypatch.setattr(bundled, "save_tiny_checkpoint", lambda path: calls.append(path) or real(path))
    first = default_model_dir()
    second = default_model_dir()
    assert first == second and first.parent == tmp_path
    assert (first / "config.json").is_file()
    assert len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no staging directory left behind


def test_bundled_image() -> None:
    path = bundled_image_path()
    assert path.is_file() and path.stat().st_size < 50_000
    with Image.open(path) as image:
        assert image.size == (336, 336)
