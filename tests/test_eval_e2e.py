"""Every benchmark end to end on its synthetic fixture with the bundled tiny checkpoint (random weights):
the CLI answers with TRIO pruning, writes LLaVA-format answers and a scored JSON consistent with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trio_vlm.bundled import save_tiny_checkpoint
from trio_vlm.cli.main import main
from trio_vlm.eval.__main__ import main as module_main
from trio_vlm.eval.benches import BENCHMARKS
from trio_vlm.eval.fixtures import make_fixture

QUESTIONS = {"gqa": 4, "mmbench": 4, "mmbench_cn": 4, "mme": 6, "pope": 6, "sqa": 3, "vqav2": 3, "textvqa": 3}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    for bench in BENCHMARKS:
        make_fixture(bench, root)
    return root


def run_cli(checkpoint: Path, data: Path, out: Path, bench: str, *extra: str) -> dict[str, Any]:
    argv = ["eval", "--bench", bench, "--data", str(data), "--model", str(checkpoint), "--output", str(out)]
    assert main([*argv, "--max-new-tokens", "1", *extra]) == 0
    return json.loads((out / "scores.json").read_text())


def answers_of(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("bench", list(BENCHMARKS))
def test_bench_end_to_end_with_trio(bench: str, checkpoint: Path, data: Path, tmp_path: Path) -> None:
    report = run_cli(
        checkpoint, data, tmp_path, bench, "--method", "trio", "--budget", "64", "--mode", "w_ve"
    )
    records = answers_of(tmp_path)
    assert len(records) == QUESTIONS[bench] == report["counts"]["answered"] == report["counts"]["questions"]
    assert report["complete"] and report["bench"] == bench
    for record in records:
        assert {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"} <= set(record)
        assert record["model_id"] == checkpoint.name
        drops = record["metadata"]["visual_tokens"]
        assert [(d["stage"], d["before"], d["after"]) for d in drops] == [("encoder", 144, 24), (3, 24, 8)]
    if bench.startswith("mmbench"):
        assert all({"round_id", "options", "option_char"} <= set(r) for r in records)
    value = report["headline"]["value"]
    assert value is None if bench == "vqav2" else isinstance(value, float)


def test_pope_score_matches_a_plain_recount(checkpoint: Path, data: Path, tmp_path: Path) -> None:
    report = run_cli(checkpoint, data, tmp_path, "pope", "--method", "vanilla")
    labels = {}
    for split in ("random", "popular", "adversarial"):
        rows = [
            json.loads(x)
            for x in (data / "pope" / "coco" / f"coco_pope_{split}.json").read_text().splitlines()
        ]
        labels.update({row["image"]: row["label"] for row in rows})
    questions = [json.loads(x) for x in (data / "pope" / "llava_pope_test.jsonl").read_text().splitlines()]
    image_of = {q["question_id"]: q["image"] for q in questions}
    correct = 0
    for record in answers_of(tmp_path):
        first = record["text"].split(".")[0].replace(",", "").split(" ")
        pred = "no" if {"no", "No", "not"} & set(first) else "yes"
        correct += pred == labels[image_of[record["question_id"]]]
    assert report["metrics"]["mean"]["accuracy"] == pytest.approx(100 * correct / 6)
    assert all(r["metadata"]["visual_tokens"] == [] for r in answers_of(tmp_path))  # vanilla: no drops
    assert report["run"]["setting"] == "Upper Bound (144)"


def test_python_dash_m_entry_point(checkpoint: Path, data: Path, tmp_path: Path) -> None:
    argv = [
        "--bench",
        "gqa",
        "--data",
        str(data / "gqa"),
        "--model",
        str(checkpoint),
        "--output",
        str(tmp_path),
    ]
    assert (
        module_main([*argv, "--max-new-tokens", "2", "--budget", "128", "--mode", "wo_ve", "--limit", "1"])
        == 0
    )
    report = json.loads((tmp_path / "scores.json").read_text())
    assert report["run"]["setting"] == "w/o VE (128)" and report["counts"]["answered"] == 1
