"""Issue 14, case by case through the CLI's ``main()``: user errors are one line and exit 2 (a traceback
only with -v), nothing is written when validation fails, one writer per answers file, and a run killed at any
point resumes to exactly what an uninterrupted run writes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import user_error
from PIL import Image

from trio_vlm.bundled import save_tiny_checkpoint
from trio_vlm.cli import answer_file
from trio_vlm.cli.main import main
from trio_vlm.locks import exclusive
from trio_vlm.testing.eval_fixtures import make_fixture

TIMING = ("prefill_seconds", "total_seconds")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


def question_file(tmp_path: Path, rows: list[dict] | None = None, n: int = 3) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for i in range(2):
        Image.new("RGB", (40 + 8 * i, 30), ("red", "blue")[i]).save(images / f"{i}.png")
    if rows is None:
        rows = [
            {"question_id": i, "image": f"{i % 2}.png", "text": f"What is shown in picture {i}?"}
            for i in range(n)
        ]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path, images


def answer_argv(checkpoint: Path, questions: Path, images: Path, answers: Path, *extra: str) -> list[str]:
    return [
        "answer-file", "--model", str(checkpoint), "--question-file", str(questions), "--image-folder", str(images),
        "--answers-file", str(answers), "--max-new-tokens", "3", "--budget", "64", *extra,
    ]  # fmt: skip


# ---- one line, exit 2 -----------------------------------------------------------------------------------


def test_bad_images_are_named(checkpoint, tmp_path, capsys):
    questions, images = question_file(tmp_path)
    (images / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    line = user_error(capsys, answer_argv(checkpoint, questions, images, tmp_path / "a.jsonl"))
    assert "cannot read image" in line and "1.png" in line and "--skip-missing-images" in line
    assert not (tmp_path / "a.jsonl").exists()  # found before any answer: nothing written
    (images / "1.png").unlink()
    line = user_error(capsys, answer_argv(checkpoint, questions, images, tmp_path / "a.jsonl"))
    assert "image file not found" in line and "q.jsonl:2" in line
    user_error(capsys, ["answer", "--model", str(checkpoint), "--image", str(images / "1.png")])


def test_skip_missing_images_skips_and_records(checkpoint, tmp_path, capsys):
    questions, images = question_file(tmp_path)
    (images / "1.png").write_bytes(b"GIF89a broken")
    answers = tmp_path / "a.jsonl"
    assert main(answer_argv(checkpoint, questions, images, answers, "--skip-missing-images")) == 0
    assert [json.loads(x)["question_id"] for x in answers.read_text().splitlines()] == [0, 2]
    skipped = json.loads(Path(f"{answers}.skipped.json").read_text())
    assert [s["question_id"] for s in skipped] == [1] and "cannot read image" in skipped[0]["reason"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"question_id": 1, "image": "0.png", "text": "A?"}] * 2,
            r"q.jsonl:2: question_id 1 .* already on line 1",
        ),
        ([{"question_id": 1, "image": "0.png", "text": "  "}], "q.jsonl:1: empty question text"),
        (
            [{"question_id": 1, "image": "0.png", "text": "<image>\nA?"}],
            "q.jsonl:1: the question contains '<image>'",
        ),
        ([], "no questions in the file"),
    ],
)
def test_question_files_are_validated_before_anything_is_written(checkpoint, tmp_path, capsys, rows, message):
    questions, images = question_file(tmp_path, rows)
    line = user_error(capsys, answer_argv(checkpoint, questions, images, tmp_path / "out" / "a.jsonl"))
    assert __import__("re").search(message, line), line
    assert not (tmp_path / "out").exists()


def test_a_non_utf8_question_file_names_file_and_line(checkpoint, tmp_path, capsys):
    questions, images = question_file(tmp_path)
    questions.write_bytes(
        questions.read_bytes() + '{"question_id": 9, "image": "0.png", "text": "caf\xe9"}\n'.encode("latin-1")
    )
    line = user_error(capsys, answer_argv(checkpoint, questions, images, tmp_path / "a.jsonl"))
    assert "q.jsonl:4: not UTF-8 text (byte 0xe9" in line


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--num-beams", "0"], "--num-beams must be >= 1"),
        (["--top-p", "1.5"], "--top-p must lie in"),
        (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu9"], "--device"),
        (["--method", "vanilla", "--budget", "64"], "vanilla prunes nothing"),
    ],
)
def test_bad_options_are_one_line(checkpoint, tmp_path, capsys, extra, message):
    questions, images = question_file(tmp_path)
    argv = answer_argv(checkpoint, questions, images, tmp_path / "a.jsonl")
    if "--budget" in extra:
        argv = argv[: argv.index("--budget")]
    assert message in user_error(capsys, [*argv, *extra])
    assert not (tmp_path / "a.jsonl").exists()


def test_model_paths_and_answer_files_that_are_not_files(checkpoint, tmp_path, capsys):
    questions, images = question_file(tmp_path)
    line = user_error(
        capsys, answer_argv(tmp_path / "no" / "such" / "model", questions, images, tmp_path / "a.jsonl")
    )
    assert "model folder not found" in line
    line = user_error(capsys, answer_argv(checkpoint, questions, images, Path("/dev/full")))
    assert "/dev/full is not a regular file" in line


def test_verbose_shows_the_traceback_and_internal_errors_keep_theirs(
    checkpoint, tmp_path, capsys, monkeypatch
):
    questions, images = question_file(tmp_path)
    argv = answer_argv(checkpoint, questions, images, tmp_path / "a.jsonl", "--temperature", "-1")
    assert main(["-v", *argv]) == 2
    assert "Traceback" in capsys.readouterr().err

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(answer_file, "generate_answer", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # not a user error: Python prints the traceback
        main(answer_argv(checkpoint, questions, images, tmp_path / "a.jsonl"))


# ---- one writer per answers file / run folder -----------------------------------------------------------


def test_a_second_writer_is_refused(checkpoint, tmp_path, capsys):
    questions, images = question_file(tmp_path)
    answers = tmp_path / "a.jsonl"
    with exclusive(
        answers
    ):  # another process is writing it (the lock is per open file, as between processes)
        line = user_error(capsys, answer_argv(checkpoint, questions, images, answers))
    assert f"is writing {answers}" in line and f"pid {os.getpid()}" in line
    data = tmp_path / "data"
    make_fixture("pope", data)
    out = tmp_path / "run"
    argv = ["eval", "--bench", "pope", "--data", str(data), "--model", str(checkpoint), "--output", str(out)]
    with exclusive(out / "answers.jsonl"):
        assert "is writing" in user_error(capsys, [*argv, "--max-new-tokens", "1"])
    assert main([*argv, "--max-new-tokens", "1"]) == 0  # released: the same command now runs


def test_eval_finds_a_corrupt_image_before_answering(checkpoint, tmp_path, capsys):
    data = tmp_path / "data"
    make_fixture("pope", data)
    first = json.loads((data / "pope" / "llava_pope_test.jsonl").read_text().splitlines()[2])
    image = next((data / "pope").rglob(first["image"]))
    image.write_bytes(image.read_bytes()[:40])  # truncated
    out = tmp_path / "run"
    argv = ["eval", "--bench", "pope", "--data", str(data), "--model", str(checkpoint), "--output", str(out)]
    assert "cannot read image" in user_error(capsys, [*argv, "--max-new-tokens", "1"])
    assert not (out / "answers.jsonl").exists()
    assert main([*argv, "--max-new-tokens", "1", "--skip-missing-images"]) == 0
    report = json.loads((out / "scores.json").read_text())
    assert report["counts"]["skipped"] == 1 and report["skipped"][0]["question_id"] == first["question_id"]


# ---- kill -9 at random points, resume -------------------------------------------------------------------


def _cli(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "trio_vlm.cli", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _kill_after(argv: list[str], watched: Path, after_lines: int, delay: float) -> None:
    """Run the CLI in a new process and SIGKILL it once ``watched`` holds ``after_lines`` lines (+ ``delay`` s)."""
    proc = _cli(argv)
    deadline = time.monotonic() + 240
    while proc.poll() is None and _lines(watched) < after_lines and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _without_timing(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        for key in TIMING:
            record.get("metadata", {}).pop(key, None)
    return records


def _resume(argv: list[str]) -> None:
    proc = _cli(argv)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_killed_runs_resume_to_the_uninterrupted_answers(checkpoint, tmp_path, seed):
    rng = random.Random(seed)
    questions, images = question_file(tmp_path, n=8)
    reference = tmp_path / "reference.jsonl"
    assert main(answer_argv(checkpoint, questions, images, reference, "--mode", "w_ve")) == 0
    killed = tmp_path / "killed.jsonl"
    argv = answer_argv(checkpoint, questions, images, killed, "--mode", "w_ve")
    _kill_after(argv, killed, rng.randrange(0, 8), rng.uniform(0, 0.05))
    _resume(argv)
    assert _without_timing(killed) == _without_timing(reference)

    data = tmp_path / "data"
    make_fixture("pope", data)
    runs = {}
    for name in ("reference", "killed"):
        out = tmp_path / f"eval-{name}"
        argv = [
            "eval",
            "--bench",
            "pope",
            "--data",
            str(data),
            "--model",
            str(checkpoint),
            "--output",
            str(out),
        ]
        argv += ["--max-new-tokens", "2", "--budget", "64", "--mode", "w_ve"]
        if name == "killed":
            _kill_after(argv, out / "answers.jsonl", rng.randrange(0, 6), rng.uniform(0, 0.05))
            _resume(argv)
        else:
            assert main(argv) == 0
        runs[name] = (_without_timing(out / "answers.jsonl"), json.loads((out / "scores.json").read_text()))
    assert runs["killed"][0] == runs["reference"][0]
    assert runs["killed"][1]["metrics"] == runs["reference"][1]["metrics"]
