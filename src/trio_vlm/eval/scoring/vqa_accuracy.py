"""The VQA soft accuracy: ``min(1, humans agreeing / 3)`` averaged over the leave-one-out subsets."""

from __future__ import annotations

from collections.abc import Sequence

from trio_vlm.eval.scoring.vqa_text import normalize_vqa_answer


def vqa_score(prediction: str, human_answers: Sequence[str]) -> float:
    """Accuracy of one prediction against the human answers (10 for VQAv2 and TextVQA).

    Both sides go through :func:`normalize_vqa_answer`; for each human answer left out in turn, the
    prediction scores ``min(1, matches among the others / 3)``; the result is the mean over the subsets.
    """
    if not human_answers:
        raise ValueError("a VQA question needs at least one human answer")
    pred = normalize_vqa_answer(prediction)
    humans = [normalize_vqa_answer(a) for a in human_answers]
    total_matches = sum(h == pred for h in humans)
    subsets = [min(1.0, (total_matches - (h == pred)) / 3) for h in humans]
    return sum(subsets) / len(subsets)
