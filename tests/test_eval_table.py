"""``trio-vlm table``: rows per method and setting, Average as % of vanilla, paper rows, CSV and plot."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from trio_vlm.cli.main import main
from trio_vlm.eval.reporting.paper_results import paper_rows
from trio_vlm.eval.reporting.plot import plot_accuracy_vs_tokens
from trio_vlm.eval.reporting.table import build_table, collect, to_csv, to_markdown

RUNS = [
    # (method, setting, avg tokens, bench, value, complete)
    ("vanilla", "Upper Bound (576)", 576.0, "gqa", 60.0, True),
    ("vanilla", "Upper Bound (576)", 576.0, "mme", 1800.0, True),
    ("vanilla", "Upper Bound (576)", 576.0, "pope", 80.0, True),
    ("trio", "w/ VE (64)", 64.0, "gqa", 54.0, True),
    ("trio", "w/ VE (64)", 64.0, "mme", 1620.0, True),
    ("trio", "w/ VE (64)", 64.0, "pope", 84.0, False),
    ("fastv", "w/o VE (64)", 64.125, "gqa", 30.0, True),
    ("trio", "w/ VE (128)", 128.0, "gqa", 57.0, True),
]


def write_run(
    root: Path, method: str, setting: str, tokens: float, bench: str, value: float, complete: bool
) -> Path:
    out = root / bench / f"{method}-{setting.replace('/', '').replace(' ', '')}"
    out.mkdir(parents=True)
    report = {
        "bench": bench,
        "headline": {"name": "x", "value": value},
        "complete": complete,
        "run": {
            "model": "llava-v1.5-7b",
            "method": method,
            "setting": setting,
            "avg_visual_tokens": tokens,
        },
    }
    (out / "scores.json").write_text(json.dumps(report))
    return out


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    for run in RUNS:
        write_run(tmp_path / "runs", *run)
    return tmp_path / "runs"


def test_rows_average_and_paper_rows(runs: Path) -> None:
    rows = build_table(collect([runs]))
    labels = [(r.setting, r.method, r.source) for r in rows]
    # The paper's order: Upper Bound, then budgets from large to small, w/o VE before w/ VE.
    assert labels == [
        ("Upper Bound (576)", "Vanilla", "measured"),
        ("Upper Bound (576)", "Vanilla", "paper"),
        ("w/ VE (128)", "TRIO (Ours)", "measured"),
        ("w/ VE (128)", "TRIO (Ours)", "paper"),
        ("w/o VE (64)", "FastV", "measured"),
        ("w/o VE (64)", "FastV", "paper"),
        ("w/ VE (64)", "TRIO (Ours)", "measured"),
        ("w/ VE (64)", "TRIO (Ours)", "paper"),
    ]
    by = {(r.setting, r.method, r.source): r for r in rows}
    trio64 = by[("w/ VE (64)", "TRIO (Ours)", "measured")]
    assert trio64.average == pytest.approx(100 * (54 / 60 + 1620 / 1800 + 84 / 80) / 3)
    assert by[("Upper Bound (576)", "Vanilla", "measured")].average == pytest.approx(100.0)
    assert by[("w/o VE (64)", "FastV", "measured")].average == pytest.approx(50.0)
    assert (trio64.average_over, by[("w/o VE (64)", "FastV", "measured")].average_over) == (3, 1)
    paper = by[("w/ VE (64)", "TRIO (Ours)", "paper")]
    assert (paper.values["GQA"], paper.values["MME"], paper.average) == (58.3, 1744.0, 96.6)
    assert trio64.incomplete == {"POPE"}


def test_without_paper_rows(runs: Path) -> None:
    rows = build_table(collect([runs]), with_paper=False)
    assert [r.setting for r in rows] == ["Upper Bound (576)", "w/ VE (128)", "w/o VE (64)", "w/ VE (64)"]
    assert {r.source for r in rows} == {"measured"}


def test_markdown_and_csv_agree(runs: Path) -> None:
    rows = build_table(collect([runs]), with_paper=False)
    parsed = list(csv.reader(io.StringIO(to_csv(rows))))
    assert parsed[0] == ["Setting", "Method", "Source", "GQA", "MMB", "MMB-cn", "MME", "POPE", "SQA", "VQAv2",
                         "TextVQA", "Average"]  # fmt: skip
    trio = next(r for r in parsed if r[:2] == ["w/ VE (64)", "TRIO (Ours)"])
    assert trio[3:] == ["54.0", "–", "–", "1620", "84.0*", "–", "–", "–", "95.0% (3/8)"]
    markdown = to_markdown(rows)
    assert "| w/ VE (64) | TRIO (Ours) | measured | 54.0 | – | – | 1620 | 84.0* |" in markdown
    assert "scored on part of the questions" in markdown
    assert "Average (k/8): over the k benchmarks" in markdown


def test_several_models_get_a_model_column(runs: Path, tmp_path: Path) -> None:
    other = write_run(tmp_path / "other", "vanilla", "Upper Bound (144)", 144.0, "gqa", 10.0, True)
    report = json.loads((other / "scores.json").read_text())
    report["run"]["model"] = "tiny"
    (other / "scores.json").write_text(json.dumps(report))
    header = to_csv(build_table(collect([runs, tmp_path / "other"]), with_paper=False)).splitlines()[0]
    assert header.startswith("Model,Setting,Method")


def test_cli_table_prints_and_writes(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_csv, plot = tmp_path / "t.csv", tmp_path / "plot.png"
    assert main(["table", "--runs", str(runs), "--csv", str(out_csv), "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| Setting | Method | Source | GQA |")
    assert out_csv.read_text().startswith("Setting,Method,Source,GQA")
    with Image.open(plot) as image:
        assert image.size[0] > 400
    assert main(["table", "--runs", str(runs), "--format", "csv", "--no-paper"]) == 0
    assert "paper" not in capsys.readouterr().out


def test_plot_needs_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_accuracy_vs_tokens([], tmp_path / "p.png")


def test_missing_or_empty_run_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        collect([tmp_path / "nope"])
    with pytest.raises(FileNotFoundError, match="no scores.json"):
        collect([tmp_path])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "scores.json").write_text("{}")
    with pytest.raises(ValueError, match="not a trio-vlm scores file"):
        collect([bad])


def test_embedded_paper_table() -> None:
    rows = paper_rows()
    assert len(rows) == 28
    assert rows[0]["method"] == "Vanilla" and rows[0]["MME"] == "1862"
    shared = Path(__file__).resolve().parents[2] / "shared" / "spec" / "paper_llava15_7b.csv"
    if shared.is_file():  # the spec copy, where the checkout sits beside shared/
        assert list(csv.DictReader(io.StringIO(shared.read_text(encoding="utf-8")))) == rows
