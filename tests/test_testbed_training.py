"""Testbed training pieces: prompt splitting, the shared-prefix objective and a deterministic two-step run."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlavaForConditionalGeneration

from trio_vlm.loading import load_model_and_processor, prompt_for
from trio_vlm.testbed.batches import IGNORE, build_batch, split_prompt
from trio_vlm.testbed.config import model_config
from trio_vlm.testbed.generator import make_example, make_scene
from trio_vlm.testbed.objective import (
    cls_attention_loss,
    evidence_attention_loss,
    grounding_attention_loss,
    image_prefix,
    question_logits,
)
from trio_vlm.testbed.train import TrainSettings, curriculum_shapes, train
from trio_vlm.testbed.vocab import IMAGE_TOKEN_ID, build_processor


@pytest.fixture(scope="module")
def processor():
    return build_processor()


@pytest.mark.parametrize("conv_mode", ["vicuna_v1", "llava_hf"])
def test_split_prompt_matches_processor(processor, conv_mode: str) -> None:
    example = make_example(1, 4)
    prompt = prompt_for(example.question.text, conv_mode)
    full = processor(images=example.image, text=prompt, return_tensors="pt")
    prefix, suffix = split_prompt(processor.tokenizer, example.question.text, conv_mode)
    assert full["input_ids"][0].tolist() == prefix + suffix
    assert int((full["input_ids"] == IMAGE_TOKEN_ID).sum()) == 576
    assert tuple(full["pixel_values"].shape) == (1, 3, 336, 336)
    unk = processor.tokenizer.unk_token_id
    assert unk not in prefix + suffix


def test_batch_targets(processor) -> None:
    batch = build_batch(processor, 0, [0, 1], "llava_hf", rounds=2)
    assert batch.questions_per_image == 12 and batch.inputs.shape[0] == 24
    eos = processor.tokenizer.eos_token_id
    for r in range(batch.inputs.shape[0]):
        valid = batch.targets[r] != IGNORE
        n = int(valid.sum())
        assert batch.targets[r, n - 1] == eos and batch.is_answer[r].sum() == 2
        assert torch.equal(batch.targets[r, : n - 1], batch.inputs[r, 1:n])  # next-token targets
        assert bool(batch.is_answer[r, n - 2]) and bool(batch.is_answer[r, n - 1])


def test_shared_prefix_equals_full_forward(processor) -> None:
    torch.manual_seed(0)
    small = model_config(vision_width=32, vision_layers=2, llm_width=32, llm_layers=2)  # same wiring, cheaper
    model = LlavaForConditionalGeneration(small).eval()
    batch = build_batch(processor, 0, [2, 3], "vicuna_v1")
    with torch.no_grad():
        _, _, cache, _ = image_prefix(model, batch)
        logits, _ = question_logits(model, batch, cache)
        for row in (0, 7, 11):
            image = row // batch.questions_per_image
            length = int((batch.targets[row] != IGNORE).sum())
            ids = torch.cat([batch.prefix_ids[image], batch.inputs[row, :length]])[None]
            full = model(input_ids=ids, pixel_values=batch.pixel_values[image : image + 1]).logits
            torch.testing.assert_close(logits[row, :length], full[0, -length:], rtol=1e-4, atol=1e-4)


def test_attention_losses_match_eager_attention_maps(processor) -> None:
    """The auxiliary attention losses recomputed from layer inputs equal those read from eager attention maps."""
    torch.manual_seed(0)
    small = model_config(
        vision_width=32, vision_layers=2, llm_width=32, llm_layers=3, attn_implementation="eager"
    )
    model = LlavaForConditionalGeneration(small).eval()
    with torch.no_grad():
        for module in model.modules():  # sharper attention than the default init, so masses differ
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, 0.3)
    batch = build_batch(processor, 0, [2, 3], "vicuna_v1")
    with torch.no_grad():
        _, _, cache, vision_states = image_prefix(model, batch)
        _, seen = question_logits(model, batch, cache, (1, 2))
        loss = evidence_attention_loss(model, batch, cache, seen)
        per_layer = {1: [], 2: []}
        for row in range(batch.inputs.shape[0]):
            if not batch.evidence[row].any():
                continue
            image = row // batch.questions_per_image
            length = int((batch.targets[row] != IGNORE).sum())
            ids = torch.cat([batch.prefix_ids[image], batch.inputs[row, : length - 1]])[
                None
            ]  # up to the last ":"
            out = model(
                input_ids=ids, pixel_values=batch.pixel_values[image : image + 1], output_attentions=True
            )
            start = int((batch.prefix_ids[image] == IMAGE_TOKEN_ID).nonzero()[0])
            for layer in per_layer:
                att = out.attentions[layer][0, :, -1, start : start + 576]
                per_layer[layer].append(-torch.log(att[:, batch.evidence[row]].sum(-1).mean() + 1e-6))
        expected = torch.stack([torch.stack(v).mean() for v in per_layer.values()]).mean()
        torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)

        cache = image_prefix(model, batch)[2]
        _, seen = question_logits(model, batch, cache, (0, 2))
        grounding = grounding_attention_loss(model, batch, cache, seen)
        per_word = {0: [], 2: []}
        for row in range(batch.inputs.shape[0]):
            image = row // batch.questions_per_image
            length = int((batch.targets[row] != IGNORE).sum())
            ids = torch.cat([batch.prefix_ids[image], batch.inputs[row, :length]])[None]
            out = model(
                input_ids=ids, pixel_values=batch.pixel_values[image : image + 1], output_attentions=True
            )
            start = int((batch.prefix_ids[image] == IMAGE_TOKEN_ID).nonzero()[0])
            prefix_len = batch.prefix_ids.shape[1]
            for t in range(length):
                if batch.grounding[row, t].any():
                    for layer in per_word:
                        att = out.attentions[layer][0, :, prefix_len + t, start : start + 576]
                        per_word[layer].append(
                            -torch.log(att[:, batch.grounding[row, t]].sum(-1).mean() + 1e-6)
                        )
        expected = torch.stack([torch.stack(v).mean() for v in per_word.values()]).mean()
        torch.testing.assert_close(grounding, expected, rtol=1e-4, atol=1e-5)

        objects = batch.patch_labels[..., 0] > 0
        cls_loss = cls_attention_loss(model, vision_states, (0, 1), objects)
        maps = model.model.vision_tower(batch.pixel_values, output_attentions=True).attentions
        cls_expected = torch.stack(
            [
                -torch.log((maps[i][:, :, 0, 1:] * objects[:, None]).sum(-1).mean(1) + 1e-6).mean()
                for i in (0, 1)
            ]
        ).mean()
        torch.testing.assert_close(cls_loss, cls_expected, rtol=1e-4, atol=1e-5)


def test_grounding_rows_and_curriculum(processor) -> None:
    batch = build_batch(processor, 0, [5], "llava_hf", max_shapes=1)
    scene = make_scene(0, 5, max_shapes=1)
    assert len(scene.shapes) == 1
    (item,) = scene.shapes
    for row in range(batch.inputs.shape[0]):
        n_question = int((batch.targets[row] != IGNORE).sum()) - 1  # the last input is the answer word
        words = processor.tokenizer.convert_ids_to_tokens(batch.inputs[row, :n_question].tolist())
        assert not batch.grounding[row, n_question:].any()
        for t, word in enumerate(words):
            expected = set()
            if word in ("white", "tile", "letter"):
                expected = set(scene.tile.patches())
            elif word in (item.colour, item.shape, item.shape + "s", item.shape + "es"):
                expected = set(item.patches())
            assert set(batch.grounding[row, t].nonzero().flatten().tolist()) == expected, word
    assert [curriculum_shapes("0.2:1,0.5:3", f) for f in (0.0, 0.2, 0.49, 0.5)] == [1, 3, 3, None]
    with pytest.raises(ValueError, match="curriculum"):
        curriculum_shapes("half:1", 0.1)


def test_two_step_training_is_deterministic(tmp_path) -> None:
    settings = TrainSettings(
        steps=2,
        images_per_step=1,
        rounds=1,
        log_every=1,
        eval_every=2,
        validation_questions=2,
        heldout_questions=2,
    )
    logs = [train(settings, tmp_path / name) for name in ("a", "b")]
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["answer"] for h in logs[0]["history"]] == [h["answer"] for h in logs[1]["history"]]
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "training_log.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    log = json.loads((tmp_path / "a" / "training_log.json").read_text())
    assert log["settings"]["steps"] == 2 and log["heldout"]["questions"] == 2
    model, proc = load_model_and_processor(tmp_path / "a")
    assert model.config.image_seq_length == 576 and proc.tokenizer.padding_side == "left"
