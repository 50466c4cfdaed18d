"""EvalAI answer normalisation and the VQA soft accuracy, against hand-checked cases and plain references."""

from __future__ import annotations

import itertools

import pytest

from trio_vlm.eval.scoring.vqa_accuracy import vqa_score
from trio_vlm.eval.scoring.vqa_text import CONTRACTIONS, normalize_vqa_answer


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Yes, there is.", "yes there is"),  # comma dropped, final period stripped
        ("Two", "2"),  # number words become digits
        ("none", "0"),
        ("ten apples", "10 apples"),
        ("eleven", "eleven"),  # only zero..ten are mapped
        ("The dog.", "dog"),  # articles dropped
        ("a red and an orange ball", "red and orange ball"),
        ("dont", "don't"),  # contractions regain their apostrophe
        ("isnt it", "isn't it"),
        ("couldnt've", "couldn't've"),
        ("couldn'tve", "couldn't've"),
        ("somebody'd", "somebodyd"),  # a quirk of the reference table, kept
        ("3.5", "3.5"),  # a period before a digit stays
        ("10,000", "10000"),  # commas go first
        ("e.g.", "eg"),
        ("black-and-white", "black and white"),  # a glued hyphen becomes a space
        ("black - white", "black white"),  # a spaced one is deleted
        ("what's that", "what 's that"),  # 's is split off
        ("(left)", "left"),
        ("yes!", "yes"),
        ("Hello, World?", "hello world"),
        ("a.m.", "am"),
        ("  Line\nbreak\ttab ", "line break tab"),
        ("", ""),
    ],
)
def test_normalize_hand_checked(raw: str, expected: str) -> None:
    assert normalize_vqa_answer(raw) == expected


def test_period_removal_stops_after_32() -> None:
    # The reference passes re.UNICODE (32) as sub's count: only the first 32 periods go.
    assert normalize_vqa_answer("x" + "." * 40) == "x" + "." * 8


def test_contraction_table_shape() -> None:
    # Every key lacks one apostrophe of its value, except the three irregular reference entries.
    irregular = {"let's", "she's", "somebody'd"}
    for key, value in CONTRACTIONS.items():
        if key in irregular:
            continue
        assert value.count("'") == key.count("'") + 1
        assert any(value[:i] + value[i + 1 :] == key for i, c in enumerate(value) if c == "'")
    assert CONTRACTIONS["yall'd've"] == CONTRACTIONS["y'alld've"] == CONTRACTIONS["y'all'dve"] == "y'all'd've"
    assert "yalldve" not in CONTRACTIONS  # two apostrophes missing is not in the table
    assert len(CONTRACTIONS) == 120  # as many entries as the reference table


def reference_vqa_score(pred: str, humans: list[str]) -> float:
    """Written out as the VQA paper describes it: leave each human answer out in turn."""
    pred = normalize_vqa_answer(pred)
    humans = [normalize_vqa_answer(h) for h in humans]
    accs = []
    for left_out in range(len(humans)):
        others = [h for i, h in enumerate(humans) if i != left_out]
        accs.append(min(1.0, sum(1 for h in others if h == pred) / 3))
    return sum(accs) / len(accs)


@pytest.mark.parametrize(
    ("matches", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)]
)
def test_vqa_score_by_number_of_agreeing_humans(matches: int, expected: float) -> None:
    humans = ["two"] * matches + ["cat"] * (10 - matches)
    assert vqa_score("2", humans) == pytest.approx(expected)
    assert vqa_score("Two.", humans) == pytest.approx(expected)


def test_vqa_score_matches_reference_on_mixed_answers() -> None:
    answers = ["yes", "Yes", "yes.", "no", "No", "2", "two", "the dog", "dog", "a dog"]
    for pred, n in itertools.product(["yes", "no", "dog", "2", "cat", "The Dog!"], [10, 7, 3]):
        assert vqa_score(pred, answers[:n]) == pytest.approx(reference_vqa_score(pred, answers[:n]))


def test_vqa_score_needs_answers() -> None:
    with pytest.raises(ValueError, match="at least one human answer"):
        vqa_score("yes", [])
