"""Each benchmark's answer reading and scoring, on hand-checked answers to the synthetic fixtures.

Answers files are written by hand here (no model), then scored through the same path as
``trio-vlm eval --answers-file`` so loading, matching and scoring are all exercised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trio_vlm.eval.benches import LoadOptions, get_benchmark
from trio_vlm.eval.benches.gqa import gqa_prediction
from trio_vlm.eval.benches.mme import mme_yes_no, question_key
from trio_vlm.eval.benches.pope import pope_yes_no
from trio_vlm.eval.benches.sqa import sqa_letter
from trio_vlm.eval.benches.textvqa import question_of_prompt
from trio_vlm.eval.reading.paths import resolve_files
from trio_vlm.eval.runner import EvalConfig, run_eval
from trio_vlm.eval.scoring.option_letter import mmbench_letter
from trio_vlm.testing.eval_fixtures import make_fixture


def score(tmp_path: Path, bench: str, texts: list[str | None], **config: Any) -> dict[str, Any]:
    """Write one answer per fixture question (``None``: leave it unanswered) and score the file."""
    data = tmp_path / "data"
    if not data.exists():  # a test may have built (and altered) the fixture already
        make_fixture(bench, data)
    load = config.pop("load", LoadOptions())
    files = resolve_files(get_benchmark(bench), data, annotation=config.get("annotation"))
    items = get_benchmark(bench).load(files, load)
    assert len(items) == len(texts), f"{bench} fixture has {len(items)} questions"
    answers = tmp_path / "answers.jsonl"
    with answers.open("w", encoding="utf-8") as fh:
        for item, text in zip(items, texts):
            if text is not None:
                record = {"question_id": item.question_id, "prompt": item.prompt, "text": text, **item.extra}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    cfg = EvalConfig(
        bench=bench, data=data, output=tmp_path / "out", answers_file=answers, load=load, **config
    )
    report = run_eval(cfg)
    assert report is not None
    assert json.loads((tmp_path / "out" / "scores.json").read_text()) == json.loads(json.dumps(report))
    return report


# ---- POPE -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes, there is a dog.", "yes"),
        ("No.", "no"),
        ("No, there is not.", "no"),
        ("There is no dog in the image.", "no"),
        ("NO", "yes"),  # the official rule only knows "No", "no" and "not"
        ("Not sure", "yes"),
        ("nothing", "yes"),
        ("Yes. But no cat.", "yes"),  # only the first sentence counts
        ("I do not see one", "no"),
    ],
)
def test_pope_reading(text: str, expected: str) -> None:
    assert pope_yes_no(text) == expected


def test_pope_scores(tmp_path: Path) -> None:
    # Labels per split are [yes, no]. random: TP, TN. popular: TP ("NO" reads yes), FP. adversarial: TP, TN.
    texts = ["Yes, there is a circle.", "No.", "NO", "Yes", "Not sure", "I don't think so, no."]
    report = score(tmp_path, "pope", texts)
    splits = report["metrics"]["splits"]
    assert splits["random"] == {
        "n": 2, "accuracy": 100.0, "precision": 100.0, "recall": 100.0, "f1": 100.0, "yes_ratio": 50.0,
        "tp": 1, "fp": 0, "tn": 1, "fn": 0,
    }  # fmt: skip
    assert (splits["popular"]["tp"], splits["popular"]["fp"]) == (1, 1)
    assert splits["popular"]["precision"] == pytest.approx(50.0)
    assert splits["popular"]["f1"] == pytest.approx(200 / 3)
    assert splits["popular"]["yes_ratio"] == 100.0
    assert report["headline"]["value"] == pytest.approx((100 + 200 / 3 + 100) / 3)
    assert report["metrics"]["mean"]["accuracy"] == pytest.approx((100 + 50 + 100) / 3)
    assert report["complete"] and report["counts"]["answered"] == 6


def test_pope_mismatched_labels(tmp_path: Path) -> None:
    data = tmp_path / "data"
    base = make_fixture("pope", data)
    label_file = base / "coco" / "coco_pope_random.json"
    rows = [json.loads(line) for line in label_file.read_text().splitlines()]
    rows[1]["image"] = "COCO_val2014_999.jpg"
    label_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="do not match"):
        score(tmp_path, "pope", ["yes"] * 6)


# ---- MME ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Yes", "yes"), ("no", "no"), ("Yes, it is.", "yes"), ("Not really", "no"), ("none", "no"),
     ("Nope", "no"), ("I know", "other"), ("know", "no"), ("The answer is yes", "other"), ("", "other")],
)  # fmt: skip
def test_mme_reading(text: str, expected: str) -> None:
    assert mme_yes_no(text) == expected


def test_mme_question_key_joins_llava_and_mme_spellings() -> None:
    mme = "Is it red?  Please answer yes or no."
    assert question_key(mme) == question_key("Is it red? Please answer yes or no.") == "Is it red?"
    assert question_key("Is it red?\nAnswer the question using a single word or phrase.") == "Is it red?"


def test_mme_scores(tmp_path: Path) -> None:
    # Ground truth per image: (Yes, No). existence: both right. artwork: one right. code_reasoning: none.
    texts = ["Yes", "No", "Yes, it is.", "Yes", "Nope", "I think so"]
    report = score(tmp_path, "mme", texts)
    cats = report["metrics"]["categories"]
    assert (cats["existence"]["acc"], cats["existence"]["acc_plus"], cats["existence"]["score"]) == (
        100,
        100,
        200,
    )
    assert (cats["artwork"]["acc"], cats["artwork"]["acc_plus"], cats["artwork"]["score"]) == (50, 0, 50)
    assert cats["code_reasoning"]["score"] == 0 and cats["code_reasoning"]["other_answers"] == 1
    assert report["metrics"]["perception"] == 250 and report["metrics"]["cognition"] == 0
    assert report["headline"]["value"] == 250


def test_mme_image_with_one_answer_is_left_out_of_acc_plus(tmp_path: Path) -> None:
    report = score(tmp_path, "mme", ["Yes", None, "Yes", "No", "yes", "no"])
    existence = report["metrics"]["categories"]["existence"]
    assert (existence["questions"], existence["images"], existence["incomplete_images"]) == (1, 0, 1)
    assert existence["score"] == 100  # acc 100 over its one answer, acc+ over no complete image
    assert not report["complete"] and report["counts"]["missing"] == 1


# ---- GQA ------------------------------------------------------------------------------------------------


def test_gqa_reading() -> None:
    assert gqa_prediction("Yes...") == "yes"
    assert gqa_prediction("Red.") == "red"
    assert gqa_prediction("The answer is red.") == "the answer is red"  # exact match only
    assert gqa_prediction(" yes") == " yes"  # no whitespace stripping in LLaVA's converter


def test_gqa_scores(tmp_path: Path) -> None:
    report = score(tmp_path, "gqa", ["Yes.", "No", "Red.", "Left side"])  # gold: yes, no, red, left
    assert report["headline"]["value"] == 75.0
    assert report["metrics"]["by_type"]["structural"] == {"query": 50.0, "verify": 100.0}


# ---- TextVQA --------------------------------------------------------------------------------------------


def test_textvqa_question_of_prompt() -> None:
    short = "Answer the question using a single word or phrase."
    assert question_of_prompt(f"What is it?\nReference OCR token: a, b\n{short}") == "what is it?"
    assert question_of_prompt(f"Reference OCR token: a\nWhat is it?\n{short}") == "what is it?"
    assert question_of_prompt(f"What is it?\n{short}") == "what is it?"
    assert question_of_prompt("OCR tokens: a b Question: What is it? Short answer:") == "what is it?"
    with pytest.raises(ValueError, match="unrecognised TextVQA prompt"):
        question_of_prompt("one line")


def test_textvqa_scores(tmp_path: Path) -> None:
    # Human answers: six "two", four "2" -> all normalise to "2".
    report = score(tmp_path, "textvqa", ["Two.", "2", "three"])
    assert report["headline"]["value"] == pytest.approx(200 / 3)


# ---- VQAv2 ----------------------------------------------------------------------------------------------


def test_vqav2_submission(tmp_path: Path) -> None:
    report = score(tmp_path, "vqav2", ["Two dogs.", "Yes!", None])
    assert report["headline"]["value"] is None  # test-dev: EvalAI scores it
    upload = json.loads(Path(report["files"]["submission"]).read_text())
    assert upload == [
        {"question_id": 1000, "answer": "2 dogs"},
        {"question_id": 1001, "answer": "yes"},
        {"question_id": 1002, "answer": ""},  # not answered
        {"question_id": 9999, "answer": ""},  # in the full test split only
    ]
    assert report["counts"]["missing"] == 1 and not report["complete"]


def test_vqav2_val_scoring(tmp_path: Path) -> None:
    annotations = tmp_path / "val_annotations.json"
    answers = [["two"] * 10, ["yes"] * 2 + ["no"] * 8, ["red"] * 3 + ["blue"] * 7]
    annotations.write_text(
        json.dumps(
            {
                "annotations": [
                    {"question_id": 1000 + i, "answer_type": t, "answers": [{"answer": a} for a in ans]}
                    for i, (ans, t) in enumerate(zip(answers, ["number", "yes/no", "other"]))
                ]
            }
        )
    )
    report = score(tmp_path, "vqav2", ["2", "Yes", "Red"], annotation=annotations)
    assert report["metrics"]["by_answer_type"] == pytest.approx(
        {"number": 100.0, "yes/no": 60.0, "other": 90.0}
    )
    assert report["headline"]["value"] == pytest.approx(250 / 3)


# ---- ScienceQA ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("A", "A"), ("A. red", "A"), ("A.", None), ("The answer is B.", "B"), ("The answer is B", None),
     ("E", "E"), ("F", None), ("a", None), ("The answer is A. The answer is B.", None)],
)  # fmt: skip
def test_sqa_reading(text: str, expected: str | None) -> None:
    assert sqa_letter(text) == expected


def test_sqa_scores_image_subset(tmp_path: Path) -> None:
    # Gold letters A, B, C for the three image questions; "C." alone is a failed parse (official rule).
    report = score(tmp_path, "sqa", ["A", "B. blue", "C."])
    metrics = report["metrics"]
    assert metrics["img_accuracy"] == pytest.approx(200 / 3) and metrics["img_n"] == 3
    assert metrics["unparsed"] == 1


def test_sqa_scores_all_questions(tmp_path: Path) -> None:
    report = score(
        tmp_path, "sqa", ["A", "B. blue", "C.", "The answer is A"], load=LoadOptions(sqa_subset="all")
    )
    assert report["metrics"]["accuracy"] == 50.0 and report["metrics"]["n"] == 4
    assert report["headline"]["value"] == pytest.approx(200 / 3)  # the text-only question is not in IMG


# ---- MMBench --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("B", "B"), ("(C)", "C"), ("B. cat", "B"), ("The answer is B.", "B"), ("The answer is A.", "A"),
     ("Answer: (B)", "B"), ("A cat sits on the mat", "B"), ("I choose A and B", None), ("Neither", None),
     ("cow", "C"), ("dog or cat", None)],
)  # fmt: skip
def test_mmbench_reading(text: str, expected: str | None) -> None:
    assert mmbench_letter(text, {"A": "dog", "B": "cat", "C": "cow"}) == expected


@pytest.mark.parametrize("bench", ["mmbench", "mmbench_cn"])
def test_mmbench_circular_scores(tmp_path: Path, bench: str) -> None:
    # Rows: q0 (gold B), q0 rotated (gold A), q1 (gold C), q1 rotated (gold B).
    report = score(tmp_path, bench, ["B", "The answer is A.", "C", "A"])
    metrics = report["metrics"]
    assert metrics["circular_accuracy"] == 50.0  # q1 fails its rotation
    assert metrics["single_pass_accuracy"] == 100.0
    assert metrics["by_category"] == {"recognition": 100.0, "spatial": 0.0}


def test_mmbench_all_rounds_rotates_options(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_fixture("mmbench", data)
    bench = get_benchmark("mmbench")
    items = bench.load(resolve_files(bench, data), LoadOptions(mmbench_all_rounds=True))
    first = [item for item in items if item.question_id == 0]
    assert [i.extra["round_id"] for i in first] == [0, 1, 2, 3]
    assert first[1].extra["options"] == ["dog", "cow", "pig", "cat"]
    assert [i.info["gold"] for i in first] == ["B", "A", "D", "C"]  # "dog" moves one place up each round
    assert first[1].prompt.endswith("A. dog\nB. cow\nC. pig\nD. cat")
    assert first[0].text.endswith("Answer with the option's letter from the given choices directly.")


def test_mmbench_partial_rotations_are_left_out(tmp_path: Path) -> None:
    report = score(tmp_path, "mmbench", ["B", "A", "C", None])
    assert report["metrics"]["questions"] == 1 and report["metrics"]["incomplete_questions"] == 1


# ---- mismatched answers ---------------------------------------------------------------------------------


def test_answers_for_unknown_questions_are_rejected(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_fixture("gqa", data)
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": "123", "prompt": "What?", "text": "yes"}) + "\n")
    with pytest.raises(ValueError, match="does not match the question file"):
        run_eval(EvalConfig(bench="gqa", data=data, output=tmp_path / "out", answers_file=answers))


def test_malformed_answer_line_names_the_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_fixture("gqa", data)
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"question_id": "1", "prompt": "x", "text": "y"}\n{oops\n{"a": 1}\n')
    with pytest.raises(ValueError, match=r"answers.jsonl:2: malformed answer line"):
        run_eval(EvalConfig(bench="gqa", data=data, output=tmp_path / "out", answers_file=answers))
