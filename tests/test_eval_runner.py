"""The eval runner: resumable answers, sharding across ranks, run consistency and bad-data handling.

Generation is replaced by a fast recorder (the model still loads); end-to-end runs with real generation
are in test_eval_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trio_vlm.bundled import save_tiny_checkpoint
from trio_vlm.eval import answering
from trio_vlm.eval.runner import EvalConfig, run_eval
from trio_vlm.eval.sharding import shard, world_from_env
from trio_vlm.generation import Answer
from trio_vlm.methods.request import MethodRequest as MethodSpec
from trio_vlm.testing.eval_fixtures import make_fixture


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


class Recorder:
    """Stands in for generate_answer: answers "yes" and records the prompts; can fail on call N."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.prompts: list[str] = []
        self.fail_on = fail_on

    def __call__(self, model: Any, processor: Any, image: Any, prompt: str, method: Any, gen: Any) -> Answer:
        if self.fail_on is not None and len(self.prompts) + 1 == self.fail_on:
            raise KeyboardInterrupt
        self.prompts.append(prompt)
        return Answer(text="yes", total_seconds=0.25, prefill_seconds=0.125)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(answering, "generate_answer", rec)
    return rec


def config(tmp_path: Path, checkpoint: Path, bench: str = "pope", **kw: Any) -> EvalConfig:
    data = tmp_path / "data"
    if not data.exists():
        make_fixture(bench, data)
    kw.setdefault("method", MethodSpec("trio", 64, "w_ve"))
    return EvalConfig(bench=bench, data=data, output=tmp_path / "out", model=str(checkpoint), **kw)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_answer_lines_follow_llava_format(tmp_path: Path, checkpoint: Path, recorder: Recorder) -> None:
    report = run_eval(config(tmp_path, checkpoint))
    records = lines(tmp_path / "out" / "answers.jsonl")
    assert [r["question_id"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(
        list(r)[:6] == ["question_id", "prompt", "text", "answer_id", "model_id", "metadata"] for r in records
    )
    run = records[0]["metadata"]["run"]
    assert (run["method"], run["budget"], run["mode"], run["setting"]) == ("trio", 64, "w_ve", "w/ VE (64)")
    assert run["schedule"]["visual_token_num"] == 24  # the preset scaled to the tiny model's 144 tokens
    assert len({r["answer_id"] for r in records}) == 6
    assert recorder.prompts[0].endswith("USER: <image>\n" + records[0]["prompt"] + " ASSISTANT:")
    assert report["timing"] == {
        "prefill_seconds_sum": 0.75,
        "total_seconds_sum": 1.5,
        "timed_answers": 6,
        "avg_visual_tokens_measured": None,  # the recorder measures nothing
    }


def test_resume_after_interrupt_keeps_and_skips_finished_lines(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(answering, "generate_answer", Recorder(fail_on=4))
    with pytest.raises(KeyboardInterrupt):
        run_eval(config(tmp_path, checkpoint))
    answers = tmp_path / "out" / "answers.jsonl"
    first = lines(answers)
    assert [r["question_id"] for r in first] == [1, 2, 3]
    with answers.open("a") as fh:  # a write cut short by the crash
        fh.write('{"question_id": 4, "prom')
    second = Recorder()
    monkeypatch.setattr(answering, "generate_answer", second)
    report = run_eval(config(tmp_path, checkpoint))
    assert len(second.prompts) == 3  # questions 4, 5, 6 only
    final = lines(answers)
    assert [r["question_id"] for r in final] == [1, 2, 3, 4, 5, 6]
    assert final[:3] == first  # finished lines untouched
    assert report["complete"]
    third = Recorder()
    monkeypatch.setattr(answering, "generate_answer", third)
    run_eval(config(tmp_path, checkpoint))
    assert third.prompts == []


def test_two_ranks_shard_and_merge_in_question_order(
    tmp_path: Path, checkpoint: Path, recorder: Recorder
) -> None:
    assert run_eval(config(tmp_path, checkpoint, world_size=2, rank=1)) is None
    rank1 = lines(tmp_path / "out" / "answers.rank1.jsonl")
    assert [r["question_id"] for r in rank1] == [2, 4, 6]  # i % 2 == 1
    report = run_eval(config(tmp_path, checkpoint, world_size=2, rank=0, poll_seconds=0.01))
    assert [r["question_id"] for r in lines(tmp_path / "out" / "answers.rank0.jsonl")] == [1, 3, 5]
    merged = lines(tmp_path / "out" / "answers.jsonl")
    assert [r["question_id"] for r in merged] == [1, 2, 3, 4, 5, 6]
    assert [r for r in merged if r["question_id"] % 2 == 0] == rank1
    assert report["counts"]["answered"] == 6 and len(recorder.prompts) == 6


def test_rank0_times_out_waiting_for_a_missing_rank(
    tmp_path: Path, checkpoint: Path, recorder: Recorder
) -> None:
    cfg = config(tmp_path, checkpoint, world_size=2, rank=0, merge_timeout=0.2, poll_seconds=0.05)
    with pytest.raises(TimeoutError, match="3 of 6 answers still missing"):
        run_eval(cfg)


def test_resuming_with_another_method_is_refused(
    tmp_path: Path, checkpoint: Path, recorder: Recorder
) -> None:
    run_eval(config(tmp_path, checkpoint))
    with pytest.raises(ValueError, match="different run"):
        run_eval(config(tmp_path, checkpoint, method=MethodSpec("vanilla")))
    with pytest.raises(ValueError, match="different run"):
        run_eval(config(tmp_path, checkpoint, max_new_tokens=7))


def test_missing_image_is_an_error_or_a_counted_skip(
    tmp_path: Path, checkpoint: Path, recorder: Recorder
) -> None:
    cfg = config(tmp_path, checkpoint)
    missing = cfg.data / "pope" / "val2014" / "COCO_val2014_000000000003.jpg"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=r"COCO_val2014_000000000003\.jpg.*1 question\(s\) affected"):
        run_eval(cfg)
    assert recorder.prompts == []
    report = run_eval(config(tmp_path, checkpoint, skip_missing_images=True))
    assert report["counts"] == {
        "questions": 6, "selected": 6, "answered": 5, "skipped": 1, "missing": 0, "not_selected": 0
    }  # fmt: skip
    assert report["skipped"] == [{"question_id": 3, "reason": f"image file not found: {missing}"}]
    assert not report["complete"]
    assert report["metrics"]["splits"]["popular"]["n"] == 1


def test_limit_answers_the_first_questions_only(tmp_path: Path, checkpoint: Path, recorder: Recorder) -> None:
    report = run_eval(config(tmp_path, checkpoint, bench="gqa", limit=2))
    assert len(recorder.prompts) == 2
    assert report["counts"]["answered"] == 2 and report["counts"]["not_selected"] == 2


def test_text_only_question_is_asked_without_image_or_pruning(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Any, Any]] = []

    def fake(model: Any, processor: Any, image: Any, prompt: str, method: Any, gen: Any) -> Answer:
        seen.append((image, method))
        assert ("<image>" in prompt) == (image is not None)
        return Answer(text="A", total_seconds=0.0)

    monkeypatch.setattr(answering, "generate_answer", fake)
    from trio_vlm.eval.benches import LoadOptions

    run_eval(config(tmp_path, checkpoint, bench="sqa", load=LoadOptions(sqa_subset="all")))
    assert [(img is None, m.name) for img, m in seen] == [(False, "trio")] * 3 + [(True, "vanilla")]
    assert all(img.size[0] == img.size[1] for img, _ in seen[:3])  # padded to a square


def test_bad_inputs_have_clear_errors(tmp_path: Path, checkpoint: Path, recorder: Recorder) -> None:
    cfg = config(tmp_path, checkpoint)  # builds the POPE fixture
    with pytest.raises(ValueError, match="unknown benchmark 'coco'; available: gqa"):
        run_eval(EvalConfig(bench="coco", data=cfg.data, output=tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="--data folder not found"):
        run_eval(EvalConfig(bench="gqa", data=tmp_path / "nowhere", output=tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="GQA question file not found"):
        run_eval(EvalConfig(bench="gqa", data=tmp_path, output=tmp_path / "o"))
    questions = tmp_path / "data" / "pope" / "llava_pope_test.jsonl"
    questions.write_text(questions.read_text() + "{not json\n")
    with pytest.raises(ValueError, match=r"llava_pope_test.jsonl:7: malformed JSON line"):
        run_eval(config(tmp_path, checkpoint))
    with pytest.raises(ValueError, match="unknown method 'fastvv'"):
        MethodSpec("fastvv", 64)
    with pytest.raises(ValueError, match="vanilla prunes nothing"):
        MethodSpec("vanilla", 64)
    with pytest.raises(ValueError, match="unknown conv mode"):
        run_eval(config(tmp_path, checkpoint, conv_mode="nope"))


def test_shard_and_world_from_env() -> None:
    assert shard(list(range(7)), 3, 1) == [1, 4]
    assert world_from_env({"WORLD_SIZE": "4", "RANK": "3"}) == (4, 3)
    assert world_from_env({}) == (1, 0)
    with pytest.raises(ValueError, match="rank 4 of 4"):
        world_from_env({"WORLD_SIZE": "4", "RANK": "4"})
    with pytest.raises(ValueError, match="must be integers"):
        world_from_env({"WORLD_SIZE": "two"})
