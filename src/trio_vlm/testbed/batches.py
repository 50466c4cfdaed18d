"""Training batches: one shared image prefix per scene and several question continuations per image.

With causal attention the prefix ("[system] USER: <image>×576") does not depend on the question, so the
trainer runs it once per image and continues every question from its KV cache.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import LlavaProcessor

from trio_vlm.prompts import prompt_for
from trio_vlm.testbed.generator import make_scene, questions_for
from trio_vlm.testbed.questions import KINDS, PLURALS
from trio_vlm.testbed.render import render
from trio_vlm.testbed.scene import COLOURS, GRID, SHAPES, Scene
from trio_vlm.testbed.targets import patch_labels, scene_summary
from trio_vlm.testbed.vocab import IMAGE_TOKEN_ID

IGNORE = -100
CONV_MODES = ("vicuna_v1", "llava_hf")
# Question words that name something one can look for in the image (present or not).
OBJECT_WORDS = frozenset({*COLOURS, *SHAPES, *PLURALS.values(), "white", "tile", "letter"})


@dataclass
class Batch:
    """``pixel_values`` (B,3,H,W); ``prefix_ids`` (B,P); per question (B·Q rows, image-major): ``inputs``
    (B·Q,T), next-token ``targets`` (IGNORE on padding) and ``is_answer`` (answer and ``</s>`` targets);
    ``patch_labels`` (B,576,6), ``summary`` (B,SUMMARY_SIZE), the ``grounding`` patches of each question
    word (B·Q,T,576) and which question tokens name an object (``object_words``, B·Q,T), for the auxiliary
    losses."""

    pixel_values: torch.Tensor
    prefix_ids: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    is_answer: torch.Tensor
    patch_labels: torch.Tensor
    summary: torch.Tensor
    questions_per_image: int
    grounding: torch.Tensor | None = None
    object_words: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """The batch with every tensor on ``device``."""
        moved = {
            f: getattr(self, f).to(device)
            for f in self.__dataclass_fields__
            if isinstance(getattr(self, f), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)


def split_prompt(tokenizer, question: str, conv_mode: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt before the question (``<image>`` expanded to 576) and of the rest."""
    head, tail = prompt_for(question, conv_mode).split("<image>")
    prefix = tokenizer(head)["input_ids"] + [IMAGE_TOKEN_ID] * (GRID * GRID)
    return prefix, tokenizer(tail, add_special_tokens=False)["input_ids"]


def build_batch(
    processor: LlavaProcessor,
    seed: int,
    indices: list[int],
    conv_mode: str,
    rounds: int = 1,
    kinds: tuple[str, ...] = KINDS,
    max_shapes: int | None = None,
) -> Batch:
    """Scenes ``indices`` of stream ``seed``, each with ``rounds`` questions of every kind, in ``conv_mode``."""
    tokenizer = processor.tokenizer
    scenes = [make_scene(seed, i, max_shapes) for i in indices]
    pixels = processor.image_processor([render(s) for s in scenes], return_tensors="pt")["pixel_values"]
    prefixes, rows, grounding = [], [], []
    for scene, index in zip(scenes, indices):
        for question in questions_for(scene, seed, index, kinds * rounds):
            prefix, suffix = split_prompt(tokenizer, question.text, conv_mode)
            answer = tokenizer(question.answer, add_special_tokens=False)["input_ids"]
            if len(answer) != 1 or answer[0] == tokenizer.unk_token_id:
                raise ValueError(f"answer {question.answer!r} is not a single vocabulary word")
            rows.append((suffix, answer[0]))
            grounding.append(_grounding(scene, tokenizer.convert_ids_to_tokens(suffix)))
        prefixes.append(prefix)
    if len({len(p) for p in prefixes}) != 1:
        raise ValueError("all prefixes in a batch must share one conversation template")
    width = max(len(s) for s, _ in rows) + 1
    inputs = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    is_answer = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, (suffix, answer) in enumerate(rows):
        seq = [*suffix, answer]
        inputs[r, : len(seq)] = torch.tensor(seq)
        targets[r, : len(seq)] = torch.tensor([*seq[1:], tokenizer.eos_token_id])
        is_answer[r, len(seq) - 2 : len(seq)] = True
    return Batch(
        pixel_values=pixels,
        prefix_ids=torch.tensor(prefixes),
        inputs=inputs,
        targets=targets,
        is_answer=is_answer,
        patch_labels=torch.stack([patch_labels(s) for s in scenes]),
        summary=torch.stack([scene_summary(s) for s in scenes]),
        questions_per_image=len(rows) // len(scenes),
        grounding=torch.stack([F.pad(g, (0, 0, 0, width - g.shape[0])) for g in grounding]),
        object_words=torch.tensor(
            [
                [w in OBJECT_WORDS for w in tokenizer.convert_ids_to_tokens(suffix)]
                + [False] * (width - len(suffix))
                for suffix, _ in rows
            ]
        ),
    )


def _grounding(scene: Scene, words: list[str]) -> torch.Tensor:
    """(len(words), 576) bool: for each question word naming something in the image (a colour, a shape, a
    plural, "white"/"tile"/"letter"), the patches of what it names; other rows are empty."""
    plural_of = {p: s for s, p in PLURALS.items()}
    out = torch.zeros(len(words), GRID * GRID, dtype=torch.bool)
    for i, word in enumerate(words):
        if word in ("white", "tile", "letter"):
            items = [scene.tile]
        else:
            shape = plural_of.get(word, word)
            items = [it for it in scene.shapes if word == it.colour or shape == it.shape]
        for item in items:
            out[i, item.patches()] = True
    return out


def conv_mode_for_step(seed: int, step: int) -> str:
    """The conversation template of a training step (both templates, so either prompt style works)."""
    return CONV_MODES[int(np.random.default_rng([seed, step, 7]).integers(len(CONV_MODES)))]
