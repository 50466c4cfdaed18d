"""lmms-eval's own evaluator (its command line, in a fresh process) runs the plugin on a local task of held-out
testbed questions, in one process and in two (``torchrun``, gloo on the CPU); the scores and the samples file
must say what trio-vlm's testbed scorer says about the same questions and method.

Runs where lmms-eval is installed (``pip install -e '.[lmms]'``; CI does, see .ci/run)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trio_vlm.loading import load_model_and_processor
from trio_vlm.method_options import method_request_from
from trio_vlm.presets import shape_of
from trio_vlm.testbed import bundled_model_dir
from trio_vlm.testbed.evaluate import evaluate
from trio_vlm.testing.lmms_task import TASK, write_task

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lmms_eval") is None, reason="lmms-eval is not installed"
)
QUESTIONS = 6


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    folder = tmp_path_factory.mktemp("lmms_task")
    return folder, write_task(folder, QUESTIONS)


def expected(examples: list[Any], **options: Any) -> list[tuple[str, bool]]:
    """(predicted word, correct) per example from trio-vlm's testbed scorer with the same method."""
    model, processor = load_model_and_processor(bundled_model_dir())
    method = method_request_from(flag=str, **options).build(shape_of(model))
    return [(p.predicted, p.correct) for p in evaluate(model, processor, examples, method, progress=False)]


def run_lmms(folder: Path, out: Path, model_args: str, batch_size: int, processes: int) -> str:
    launcher = [sys.executable, "-m", "lmms_eval"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes)]
        launcher += ["--master-port", str(29500 + os.getpid() % 1000), "-m", "lmms_eval"]
    argv = [
        *launcher,
        "--model",
        "trio_vlm",
        "--model_args",
        f"pretrained={bundled_model_dir()},{model_args}",
    ]
    argv += ["--tasks", TASK, "--include_path", str(folder), "--batch_size", str(batch_size)]
    argv += ["--output_path", str(out), "--log_samples", "--verbosity", "DEBUG"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["HF_DATASETS_CACHE"] = str(out / "hf_datasets")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    return log


def check_output(out: Path, want: list[tuple[str, bool]]) -> None:
    (results,) = out.rglob("*_results.json")
    (samples,) = out.rglob(f"*_samples_{TASK}.jsonl")
    score = json.loads(results.read_text())["results"][TASK]["exact_match,none"]
    assert score == pytest.approx(sum(ok for _, ok in want) / len(want))
    rows = sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda r: r["doc_id"])
    assert [r["doc_id"] for r in rows] == list(range(QUESTIONS))
    assert [(r["filtered_resps"], r["exact_match"]) for r in rows] == [(w, float(ok)) for w, ok in want]


def test_one_process_batched(task, tmp_path) -> None:
    folder, examples = task
    want = expected(examples, method="trio", budget=64, mode="w_ve")
    assert sum(ok for _, ok in want) == QUESTIONS - 1  # TRIO at 64 misses one: the score is not trivially 1
    log = run_lmms(folder, tmp_path, "method=trio,budget=64,mode=w_ve", batch_size=2, processes=1)
    check_output(tmp_path, want)
    assert "exact_match" in log


def test_two_processes(task, tmp_path) -> None:
    folder, examples = task
    lists = "layer_list=[8],image_token_list=[24],visual_token_num=96"
    want = expected(
        examples, method="trio", mode="w_ve", layer_list="[8]", image_token_list="[24]", visual_token_num=96
    )
    log = run_lmms(folder, tmp_path, f"method=trio,mode=w_ve,{lists}", batch_size=1, processes=2)
    check_output(tmp_path, want)
    assert "Running on rank 1" in log
    print(log[log.index("trio_vlm (pretrained") :])  # the result table, kept in pytest's captured output
