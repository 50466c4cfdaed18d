"""Every benchmark end to end on its synthetic fixture with the bundled tiny checkpoint (random weights):
the CLI answers with TRIO pruning, writes LLaVA-format answers and a scored JSON consistent with them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trio_vlm.bundled import save_tiny_checkpoint
from trio_vlm.cli.main import main
from trio_vlm.eval.benches import BENCHMARKS
from trio_vlm.methods.trio import TRIO
from trio_vlm.presets import ModelShape
from trio_vlm.testbed import bundled_model_dir
from trio_vlm.testing.eval_fixtures import make_fixture

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
        if (
            record["metadata"]["avg_visual_tokens"] is None
        ):  # a text-only ScienceQA question: nothing to prune
            assert bench == "sqa" and drops == []
            continue
        assert [(d["stage"], d["before"], d["after"]) for d in drops] == [("encoder", 144, 24), (3, 24, 8)]
        assert record["metadata"]["tokens_per_layer"] == [24, 24, 24, 8, 8, 8]
        assert record["metadata"]["avg_visual_tokens"] == report["run"]["avg_visual_tokens"] == 16.0
    run = report["run"]
    assert (run["family"], run["conv_mode"], run["pad_square"]) == ("llava-1.5", "vicuna_v1", True)
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
    """``python -m trio_vlm.cli eval`` (what ``torchrun … -m trio_vlm.cli eval`` runs), in a fresh process."""
    argv = ["eval", "--bench", "gqa", "--data", str(data / "gqa"), "--model", str(checkpoint)]
    argv += [
        "--output",
        str(tmp_path),
        "--max-new-tokens",
        "2",
        "--budget",
        "128",
        "--mode",
        "wo_ve",
        "--limit",
        "1",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "trio_vlm.cli", *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "scores.json").read_text())
    assert report["run"]["setting"] == "w/o VE (128)" and report["counts"]["answered"] == 1
    assert "gqa: " in done.stdout


def test_eval_on_the_testbed_model_runs_what_its_label_says(data: Path, tmp_path: Path) -> None:
    """Issue 11: on the bundled 16-layer testbed model, "w/o VE (64)" used the 32-layer preset unscaled and
    spent ~106 visual tokens per layer. Now the label, the recorded schedule and every answer's measured
    average agree: the preset fitted to 16 layers averages exactly 64."""
    report = run_cli(
        bundled_model_dir(), data, tmp_path, "pope", "--method", "trio", "--budget", "64", "--mode", "wo_ve"
    )
    run = report["run"]
    assert run["setting"] == "w/o VE (64)" and run["family"] == "llava-1.5"
    assert run["avg_visual_tokens"] == 64.0
    fitted = TRIO.preset(ModelShape("llava-1.5", 16, 576, 576), 64, "wo_ve")
    assert run["schedule"]["layer_list"] == list(fitted.layer_list)
    assert run["schedule"]["image_token_list"] == list(fitted.image_token_list)
    for record in answers_of(tmp_path):
        per_stage = [(d["stage"], d["after"]) for d in record["metadata"]["visual_tokens"]]
        assert per_stage == list(zip(fitted.layer_list, fitted.image_token_list))
        assert record["metadata"]["avg_visual_tokens"] == 64.0
    assert report["timing"]["avg_visual_tokens_measured"] == 64.0
