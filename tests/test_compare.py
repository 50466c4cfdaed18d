"""``trio-vlm compare``: method selection, scaling to the tiny model, the table and the kept-token figure."""

import math

import numpy as np
import pytest
import torch
from helpers import user_error
from PIL import Image

from trio_vlm.cli.main import main
from trio_vlm.compare import build_candidates, model_view, selected_names
from trio_vlm.methods.compose import Compose
from trio_vlm.methods.holov import HoloV
from trio_vlm.methods.registry import available_methods
from trio_vlm.methods.trio import TRIO
from trio_vlm.methods.visionzip import VisionZip
from trio_vlm.overlay import kept_grid
from trio_vlm.presets import ModelShape

TINY = ModelShape("llava-1.5", 6, 144, 144)


def table_rows(out: str) -> dict[str, str]:
    """``{method label: rest of its row}`` from the printed table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("method ")) + 2
    rows = {}
    for line in lines[start:]:
        if line.startswith("plot: "):
            break
        label, _, rest = line.partition(" ")
        rows[label] = rest
    return rows


def test_compare_all_methods_with_plot_on_the_bundled_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRIO_VLM_CACHE", str(tmp_path / "cache"))
    plot = tmp_path / "figs" / "kept.png"
    assert (
        main(["compare", "--budget", "64", "--methods", "all", "--plot", str(plot), "--max-new-tokens", "2"])
        == 0
    )
    rows = table_rows(capsys.readouterr().out)
    expected = [m for m in available_methods() if m != "vanilla"]
    assert list(rows) == ["vanilla", *expected]
    assert rows["vanilla"].split()[0] == "144.0"
    for name in ("visionzip", "holov", "scope"):  # 64 of 576 scaled to 144 tokens: 16, one encoder drop
        assert rows[name].split()[:3] == ["16.0", "encoder", "144->16"]
        assert "failed" not in rows[name]
    with Image.open(plot) as image:
        n = len(rows)
        cols = min(5, n)
        assert image.format == "PNG"
        assert image.size == (round(320 * cols), round(370 * math.ceil(n / cols)))


def test_compare_composes_llm_methods_after_an_encoder_method(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRIO_VLM_CACHE", str(tmp_path))
    argv = ["compare", "--methods", "trio,holov", "--encoder-method", "visionzip", "--max-new-tokens", "2"]
    assert main(argv) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == ["vanilla", "visionzip+trio", "holov"]
    # the encoder keeps 2 x 64 tokens of 576 -> 32 of 144, then TRIO's LLM stages fitted to the tiny model
    trio = TRIO.preset(TINY, 64).schedule()
    stages = "; ".join(
        f"L{layer} {a}->{b}"
        for layer, a, b in zip(trio.layer_list, (32, *trio.image_token_list), trio.image_token_list)
    )
    assert f"encoder 144->32; {stages}" in rows["visionzip+trio"]


def test_compare_rejects_bad_options_before_loading(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRIO_VLM_CACHE", str(tmp_path))
    assert "unknown method 'nope'" in user_error(capsys, ["compare", "--methods", "trio,nope"])
    assert "--encoder-tokens needs --encoder-method" in user_error(
        capsys, ["compare", "--encoder-tokens", "64"]
    )
    assert "--budget must be >= 1" in user_error(capsys, ["compare", "--budget", "0"])
    assert "--image is required" in user_error(capsys, ["compare", "--model", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # nothing was built or loaded


def test_selected_names():
    assert "vanilla" not in selected_names("all") and "visionzip" in selected_names("ALL")
    assert selected_names("scope, trio,scope") == ["scope", "trio"]
    with pytest.raises(ValueError, match="comma-separated"):
        selected_names(" , ")


def test_presets_fit_and_candidates():
    assert VisionZip.preset(TINY, 64).visual_token_num == 16
    assert HoloV.preset(TINY, 192).visual_token_num == 48
    trio = TRIO.preset(TINY, 64, "w_ve")
    assert (trio.visual_token_num, trio.layer_list, trio.image_token_list) == (24, (3,), (8,))
    both = Compose(VisionZip(visual_token_num=48), TRIO.preset(TINY, 64))
    assert (
        both.schedule().visual_token_num == 48
        and both.schedule().image_token_list == TRIO.preset(TINY, 64).image_token_list
    )
    assert both.with_schedule(both.schedule()) == both
    cands = build_candidates(["trio", "scope"], TINY, 64, encoder_method="visionzip", encoder_tokens=8)
    assert [c.label for c in cands] == ["vanilla", "visionzip+trio", "scope"]
    assert cands[1].method.schedule().visual_token_num == 2  # 8 of 576 -> 2 of 144
    qwen = ModelShape("qwen2.5-vl", 4, None, 1296)  # variable tokens: the LLaVA-1.5 count as a fraction
    assert build_candidates(["scope"], qwen, 64)[1].method.image_token_ratio == round(64 / 576, 4)


def test_kept_grid_and_model_view():
    mask = kept_grid(torch.tensor([0, 5, 15]), 16)
    assert mask.shape == (4, 4) and mask.sum() == 3 and mask[0, 0] and mask[1, 1] and mask[3, 3]
    assert np.array_equal(kept_grid([0, 5, 15], 16), mask)
    assert np.array_equal(kept_grid(torch.tensor([0, 5, 15, 16, 40]), 16, ignore_beyond=True), mask)
    with pytest.raises(ValueError, match="0..15"):
        kept_grid([0, 16], 16)
    assert kept_grid(None, 9).all()
    with pytest.raises(ValueError, match="square"):
        kept_grid(None, 10)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 4, 5, generator=g)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    pixels = (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    np.testing.assert_allclose(model_view(pixels, mean, std), image.permute(1, 2, 0).numpy(), atol=1e-6)
