"""Testbed training pieces: prompt splitting, the shared-prefix objective and a deterministic two-step run."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlavaForConditionalGeneration

from trio_vlm.loading import load_model_and_processor
from trio_vlm.prompts import prompt_for
from trio_vlm.testbed.batches import IGNORE, build_batch, split_prompt
from trio_vlm.testbed.codes import attribute_codes, patch_codes
from trio_vlm.testbed.config import model_config
from trio_vlm.testbed.generator import make_example, make_scene
from trio_vlm.testbed.objective import (
    AuxHeads,
    LossLayers,
    cls_attention_loss,
    grounding_attention_loss,
    image_prefix,
    keep_for_language_phase,
    language_losses,
    question_logits,
    readout_attention_loss,
)
from trio_vlm.testbed.questions import PLURALS
from trio_vlm.testbed.scene import COLOURS, SHAPES
from trio_vlm.testbed.targets import (
    COLOUR_CLASSES,
    LETTER_CLASSES,
    SHAPE_CLASSES,
    named_targets,
    patch_labels,
)
from trio_vlm.testbed.train import TrainSettings, train
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
        logits = question_logits(model, batch, cache).logits
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
        seen = question_logits(model, batch, cache, (1, 2)).seen
        readout = readout_attention_loss(model, batch, cache, seen)
        per_row = {1: [], 2: []}
        prefix_len = batch.prefix_ids.shape[1]
        for row in range(batch.inputs.shape[0]):
            image = row // batch.questions_per_image
            length = int((batch.targets[row] != IGNORE).sum())
            ids = torch.cat([batch.prefix_ids[image], batch.inputs[row, : length - 1]])[None]
            out = model(
                input_ids=ids, pixel_values=batch.pixel_values[image : image + 1], output_attentions=True
            )
            named = batch.object_words[row, : length - 1]
            assert named.any()
            for layer in per_row:
                att = out.attentions[layer][0, :, -1, prefix_len:]
                per_row[layer].append(-torch.log(att[:, named].sum(-1).mean() + 1e-6))
        expected = torch.stack([torch.stack(v).mean() for v in per_row.values()]).mean()
        torch.testing.assert_close(readout, expected, rtol=1e-4, atol=1e-5)

        cache = image_prefix(model, batch)[2]
        seen = question_logits(model, batch, cache, (0, 2)).seen
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


def test_grounding_rows_and_object_words(processor) -> None:
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
            names = word in (*COLOURS, *SHAPES, *PLURALS.values(), "white", "tile", "letter")
            assert bool(batch.object_words[row, t]) == names, word
        assert not batch.object_words[row, n_question:].any()


def test_training_is_deterministic_in_one_or_two_processes(tmp_path) -> None:
    """The vision phase in a second process gives bitwise the weights of running the phases in turn."""
    settings = TrainSettings(
        language_steps=2,
        language_images=1,
        vision_steps=2,
        vision_images=1,
        joint_steps=2,
        joint_images=1,
        rounds=1,
        warmup=1,
        log_every=1,
        eval_every=2,
        validation_questions=2,
        heldout_questions=2,
        joint_threads=1,
    )
    logs = [
        train(dataclasses.replace(settings, parallel=parallel), tmp_path / name)
        for name, parallel in (("a", True), ("b", False))
    ]
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def losses(log: dict) -> list[dict]:
        return [{k: v for k, v in h.items() if k != "seconds"} for h in log["history"]]

    assert losses(logs[0]) == losses(logs[1])
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "training_log.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    log = json.loads((tmp_path / "a" / "training_log.json").read_text())
    assert log["settings"]["joint_steps"] == 2 and log["heldout"]["questions"] == 2
    assert [h["phase"] for h in log["history"]] == ["language"] * 2 + ["vision"] * 2 + ["joint"] * 2
    model, proc = load_model_and_processor(tmp_path / "a")
    assert model.config.image_seq_length == 576 and proc.tokenizer.padding_side == "left"


def test_language_phase_prefix_equals_a_plain_forward(processor) -> None:
    """The language phase's pruned ideal-token prefix + question continuation = one plain LM forward over
    [text, kept ideal tokens, question] at the original positions; every object patch is kept."""
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(model_config(llm_width=32, llm_layers=2)).eval()
    batch = build_batch(processor, 0, [4, 5], "llava_hf")
    codes = attribute_codes(32)
    keep = keep_for_language_phase(batch, 10, torch.Generator().manual_seed(0))
    objects = batch.patch_labels[..., 0] > 0
    assert keep.shape[1] == int(objects.sum(1).max()) + 10
    for image in range(2):
        assert (
            torch.equal(keep[image], keep[image].sort().values)
            and len(set(keep[image].tolist())) == keep.shape[1]
        )
        assert set(objects[image].nonzero().flatten().tolist()) <= set(keep[image].tolist())
    language_model = model.model.language_model
    seen: list[torch.Tensor] = []
    handle = model.lm_head.register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.no_grad():
        language_losses(
            model,
            AuxHeads(32, 96),
            batch,
            codes,
            keep,
            LossLayers(grounding=(0,), readout=(1,), probe=1, cls=()),
        )
    handle.remove()
    logits = seen[0]
    image_start = int((batch.prefix_ids[0] == IMAGE_TOKEN_ID).nonzero()[0])
    ideal = patch_codes(batch.patch_labels, codes)
    full_len = batch.prefix_ids.shape[1]
    for row in (0, 5, 11):
        image = row // batch.questions_per_image
        length = int((batch.targets[row] != IGNORE).sum())
        embeds = torch.cat(
            [
                language_model.embed_tokens(batch.prefix_ids[image, :image_start]),
                ideal[image, keep[image]],
                language_model.embed_tokens(batch.inputs[row, :length]),
            ]
        )[None]
        positions = torch.cat(
            [torch.arange(image_start), image_start + keep[image], full_len + torch.arange(length)]
        )[None]
        with torch.no_grad():
            out = model.lm_head(
                language_model(inputs_embeds=embeds, position_ids=positions).last_hidden_state
            )
        torch.testing.assert_close(logits[row, :length], out[0, -length:], rtol=1e-4, atol=1e-4)


def test_ideal_tokens_and_named_targets(processor) -> None:
    codes = attribute_codes(16)
    assert all(torch.equal(a, b) for a, b in zip(codes, attribute_codes(16)))
    scene = make_scene(0, 7)
    labels = patch_labels(scene)
    ideal = patch_codes(labels, codes)
    for patch in (0, 100, scene.tile.patches()[0], scene.shapes[0].patches()[-1]):
        row, col = divmod(patch, 24)
        expected = codes[-2][row] + codes[-1][col] + sum(codes[i][labels[patch, i]] for i in range(4))
        torch.testing.assert_close(ideal[patch], expected)
    batch = build_batch(processor, 0, [7], "llava_hf")
    targets = named_targets(
        batch.grounding, batch.patch_labels.repeat_interleave(batch.questions_per_image, 0)
    )
    words = [processor.tokenizer.convert_ids_to_tokens(r) for r in batch.inputs.tolist()]
    checked = 0
    for r, row_words in enumerate(words):
        for t, word in enumerate(row_words):
            if not batch.object_words[r, t]:  # the answer word and the other question words name nothing
                continue
            items = [it for it in scene.shapes if word in (it.colour, it.shape, PLURALS[it.shape])]
            if word in ("white", "tile", "letter"):
                items = [scene.tile]
            if not items:
                assert not targets[r, t].any() and not batch.grounding[r, t].any()
                continue
            vec = targets[r, t]
            colours = {
                COLOUR_CLASSES - 1 if it.is_tile else list(COLOURS).index(it.colour) + 1 for it in items
            }
            assert set(vec[:COLOUR_CLASSES].nonzero().flatten().tolist()) == colours
            shapes = {SHAPE_CLASSES - 1 if it.is_tile else SHAPES.index(it.shape) + 1 for it in items}
            assert (
                set(vec[COLOUR_CLASSES : COLOUR_CLASSES + SHAPE_CLASSES].nonzero().flatten().tolist())
                == shapes
            )
            sides = vec[COLOUR_CLASSES + SHAPE_CLASSES + LETTER_CLASSES : -9].tolist()
            assert sides[0] == float(all(it.col + it.size <= 12 for it in items))
            assert sides[3] == float(all(it.row >= 12 for it in items))
            assert int(vec[-9:].argmax()) == len(items) and vec[-9:].sum() == 1
            checked += 1
    assert checked > 5
