"""The testbed table's Average column and the CLI's option parsing."""

from __future__ import annotations

import math

import pytest

from trio_vlm.cli.testbed_eval import parse_budgets, parse_methods
from trio_vlm.testbed.grid import Row
from trio_vlm.testbed.table import markdown_table, plot_accuracy


def _rows() -> tuple[Row, list[Row]]:
    vanilla = Row("vanilla", None, 90.0, {"exist": 100.0, "glyph": 80.0}, evidence=100.0, evidence_last=100.0)
    rows = [
        Row("trio", 64, 75.0, {"exist": 90.0, "glyph": 60.0}, evidence=85.25, evidence_last=40.0),
        Row("random", 64, 50.0, {"exist": 60.0, "glyph": 40.0}, evidence=11.0, evidence_last=11.0),
        Row("sparsevlm", 64, math.nan, {}, error="out of reach"),
    ]
    return vanilla, rows


def test_average_is_mean_of_per_kind_ratios() -> None:
    vanilla, rows = _rows()
    assert rows[0].relative(vanilla) == pytest.approx((90 / 100 + 60 / 80) / 2 * 100)
    assert rows[1].relative(vanilla) == pytest.approx((60 / 100 + 40 / 80) / 2 * 100)
    zero = Row("vanilla", None, 0.0, {"exist": 0.0})
    assert math.isnan(rows[0].relative(zero))


def test_markdown_table(tmp_path) -> None:
    vanilla, rows = _rows()
    lines = markdown_table(vanilla, rows).splitlines()
    assert (
        lines[0]
        == "| budget | method | exist | glyph | overall | Average | evidence kept (1st drop / last) |"
    )
    assert lines[2] == "| 576 (all) | vanilla | 100.0 | 80.0 | 90.0 | 100.0% | 100.0 / 100.0 |"
    assert lines[3] == "| 64 | trio | 90.0 | 60.0 | 75.0 | 82.5% | 85.2 / 40.0 |"
    assert lines[5] == "| 64 | sparsevlm | n/a | n/a | n/a | n/a | n/a |"
    path = plot_accuracy(vanilla, rows, tmp_path / "acc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_option_parsing() -> None:
    assert parse_budgets("192, 128,64") == [192, 128, 64]
    for bad in ("", "64,", "a", "0", "-5"):
        with pytest.raises(ValueError, match="--budgets"):
            parse_budgets(bad)
    assert parse_methods("all") is None
    assert parse_methods("TRIO,random,trio") == ["trio", "random"]
    with pytest.raises(ValueError, match="unknown method"):
        parse_methods("trio,nope")
    with pytest.raises(ValueError, match="--methods"):
        parse_methods(" , ")
