"""The seeded procedural VQA generator: ``example(seed, index)`` is the same scene, image and question forever."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from trio_vlm.testbed.questions import KINDS, Question, ask
from trio_vlm.testbed.render import render
from trio_vlm.testbed.scene import Scene, sample_scene

TRAIN_SEED = 0
EVAL_SEED = 1


@dataclass(frozen=True)
class Example:
    """One benchmark item: the scene description, its rendered image and one question about it."""

    seed: int
    index: int
    scene: Scene
    image: Image.Image
    question: Question


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng([seed, index, stream])


def make_scene(seed: int, index: int, max_shapes: int | None = None) -> Scene:
    """Scene number ``index`` of the stream ``seed`` (``max_shapes``: fewer shapes, for a training curriculum)."""
    if max_shapes is None:
        return sample_scene(_rng(seed, index, 0))
    return sample_scene(_rng(seed, index, 0), min_shapes=min(5, max_shapes), max_shapes=max_shapes)


def questions_for(scene: Scene, seed: int, index: int, kinds: tuple[str, ...] = KINDS) -> list[Question]:
    """One question of each kind in ``kinds`` about the scene, deterministic in (seed, index)."""
    rng = _rng(seed, index, 1)
    return [ask(scene, kind, rng) for kind in kinds]


def make_example(seed: int, index: int, kind: str | None = None) -> Example:
    """Item ``index`` of stream ``seed``; its question kind cycles through :data:`KINDS` unless ``kind`` is given."""
    scene = make_scene(seed, index)
    kind = KINDS[index % len(KINDS)] if kind is None else kind
    (question,) = questions_for(scene, seed, index, (kind,))
    return Example(seed=seed, index=index, scene=scene, image=render(scene), question=question)


def benchmark(n: int, seed: int = EVAL_SEED, start: int = 0) -> list[Example]:
    """``n`` held-out items (kinds balanced by cycling), items ``start .. start + n - 1`` of stream ``seed``."""
    if n < 1:
        raise ValueError(f"number of questions must be >= 1, got {n}")
    return [make_example(seed, i) for i in range(start, start + n)]
