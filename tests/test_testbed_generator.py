"""The testbed generator: determinism, scene validity, rendering and ground truth read from the description."""

from __future__ import annotations

import re

import numpy as np
import pytest

from trio_vlm.testbed.generator import benchmark, make_example, make_scene, questions_for
from trio_vlm.testbed.glyphs import LETTERS, glyph_mask
from trio_vlm.testbed.questions import KINDS, answer_words, ask
from trio_vlm.testbed.render import render
from trio_vlm.testbed.scene import COLOURS, GRID, PATCH, SHAPES
from trio_vlm.testbed.targets import patch_labels, scene_summary

N_SCENES = 150


def test_same_seed_same_example() -> None:
    a, b = make_example(7, 11), make_example(7, 11)
    assert a.scene == b.scene and a.question == b.question
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    c = make_example(7, 12)
    assert c.scene != a.scene
    assert make_scene(8, 11) != a.scene


def test_benchmark_cycles_kinds_and_is_stable() -> None:
    items = benchmark(12, seed=5)
    assert [e.question.kind for e in items] == list(KINDS) * 2
    assert [e.question for e in benchmark(12, seed=5)] == [e.question for e in items]
    with pytest.raises(ValueError, match="number of questions"):
        benchmark(0)


def test_scene_layout_is_valid() -> None:
    for i in range(N_SCENES):
        scene = make_scene(0, i)
        shapes = scene.shapes
        assert 5 <= len(shapes) <= 8
        assert len({s.colour for s in shapes}) == len(shapes)  # colours are unique
        assert any([s.shape for s in shapes].count(s.shape) == 1 for s in shapes)
        assert sum(it.is_tile for it in scene.items) == 1
        for it in scene.items:
            assert it.size in (2, 3)
            assert it.row >= 0 and it.col >= 0 and max(it.row, it.col) + it.size <= GRID
        for a in scene.items:  # blocks never touch: at least one free patch between any two
            for b in scene.items:
                if a is not b:
                    rows_apart = a.row + a.size < b.row or b.row + b.size < a.row
                    cols_apart = a.col + a.size < b.col or b.col + b.size < a.col
                    assert rows_apart or cols_apart, (a, b)


def _reference_answer(scene, text: str) -> str:
    """Ground truth recomputed from the scene description by parsing the question text."""
    shapes = scene.shapes
    if m := re.fullmatch(r"is there a (\w+) (\w+) in the image \?", text):
        return "yes" if any(s.colour == m[1] and s.shape == m[2] for s in shapes) else "no"
    if m := re.fullmatch(r"what shape is the (\w+) object \?", text):
        (item,) = [s for s in shapes if s.colour == m[1]]
        return item.shape
    if m := re.fullmatch(r"what colour is the (\w+) \?", text):
        (item,) = [s for s in shapes if s.shape == m[1]]
        return item.colour
    if m := re.fullmatch(r"how many (\w+) are there \?", text):
        singular = {"crosses": "cross"}.get(m[1], m[1][:-1])
        return str(sum(s.shape == singular for s in shapes))
    if m := re.fullmatch(r"is the (\w+) object (on the left or the right|at the top or the bottom) \?", text):
        (item,) = [s for s in shapes if s.colour == m[1]]
        horizontal = m[2].startswith("on")
        lo, hi = (item.col, item.col + item.size) if horizontal else (item.row, item.row + item.size)
        centre_px = (lo + hi) / 2 * PATCH
        assert hi <= GRID / 2 or lo >= GRID / 2, "asked about an object on the middle line"
        first = centre_px < GRID * PATCH / 2
        return ("left" if first else "right") if horizontal else ("top" if first else "bottom")
    if text == "what letter is on the white tile ?":
        return scene.tile.letter.lower()
    raise AssertionError(f"unparsed question {text!r}")


def test_answers_match_scene_description() -> None:
    seen = {k: set() for k in KINDS}
    vocab = set(answer_words())
    for i in range(N_SCENES):
        scene = make_scene(3, i)
        for q in questions_for(scene, 3, i, KINDS * 2):
            assert q.answer == _reference_answer(scene, q.text), q
            assert q.answer in vocab
            seen[q.kind].add(q.answer)
    assert seen["exist"] == {"yes", "no"}
    assert seen["position"] == {"left", "right", "top", "bottom"}
    assert seen["shape"] == set(SHAPES)
    assert len(seen["glyph"]) == len(LETTERS)
    assert {"0", "1", "2"} <= seen["count"]


def test_evidence_is_the_asked_object() -> None:
    scene = make_scene(4, 2)
    rng = np.random.default_rng(0)
    q = ask(scene, "glyph", rng)
    tile = scene.tile
    expected = sorted((tile.row + dy) * GRID + tile.col + dx for dy in range(2) for dx in range(2))
    assert list(q.evidence) == expected
    q = ask(scene, "shape", rng)
    (item,) = [s for s in scene.shapes if s.colour in q.text]
    assert set(q.evidence) == set(item.patches())
    with pytest.raises(ValueError, match="unknown question kind"):
        ask(scene, "weather", rng)


def test_rendering_draws_the_description() -> None:
    for i in range(20):
        scene = make_scene(0, i)
        pixels = np.asarray(render(scene)).astype(int)
        assert pixels.shape == (GRID * PATCH, GRID * PATCH, 3)
        for item in scene.shapes:  # the block centre is filled with the object's colour (±15 jitter)
            cy, cx = (int((v + item.size / 2) * PATCH) for v in (item.row, item.col))
            patch = pixels[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3)
            close = np.abs(patch - np.array(COLOURS[item.colour])).max(axis=1) <= 15
            assert close.sum() >= 5, (item, patch)
        tile = scene.tile
        y0, x0 = tile.row * PATCH + 1, tile.col * PATCH + 1
        block = pixels[y0 : y0 + 2 * PATCH - 2, x0 : x0 + 2 * PATCH - 2]
        dark = (block.max(axis=2) < 60).sum()
        assert dark == glyph_mask(tile.letter, 3).sum()  # every ink pixel of the glyph, nothing else


def test_patch_labels_and_summary() -> None:
    scene = make_scene(0, 5)
    labels = patch_labels(scene)
    assert labels.shape == (GRID * GRID, 6)
    covered = set()
    for item in scene.items:
        for p in item.patches():
            covered.add(p)
            if item.is_tile:
                assert labels[p, 2] == LETTERS.index(item.letter) + 1
            else:
                assert labels[p, 0] == list(COLOURS).index(item.colour) + 1
                assert labels[p, 1] == list(SHAPES).index(item.shape) + 1
        assert labels[item.row * GRID + item.col, 3] == 1
    background = [p for p in range(GRID * GRID) if p not in covered]
    assert labels[background, :4].sum() == 0
    assert int(labels[:, 3].sum()) == len(scene.items)
    assert labels[GRID * 5 + 11, 4] == 0 and labels[GRID * 5 + 12, 4] == 1
    assert labels[GRID * 11 + 3, 5] == 0 and labels[GRID * 12 + 3, 5] == 1
    summary = scene_summary(scene)
    assert (
        int(summary.sum())
        == 3 * len(scene.shapes) - (len(scene.shapes) - len({s.shape for s in scene.shapes})) + 1
    )


def test_glyphs_are_distinct() -> None:
    masks = {letter: glyph_mask(letter, 1) for letter in LETTERS}
    assert all(m.shape == (7, 5) for m in masks.values())
    assert len({m.tobytes() for m in masks.values()}) == len(LETTERS)
    assert glyph_mask("E", 3).shape == (21, 15)
    with pytest.raises(ValueError, match="no glyph"):
        glyph_mask("Q", 1)
