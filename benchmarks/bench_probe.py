"""TRIO's fast probe against one decoder layer at each of TRIO-64 w/o VE's stages, interleaved round by round.

On a shared machine the speed of memory changes from minute to minute, and the probe (which streams the LM head
and the MLP weights) suffers more than the layer (which is compute-bound); a ratio measured in separate runs
moves by ±10 %. Here every round times the layer and the probe back to back on the same sequence, and the
table gives the median of the per-round ratios with its range.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_probe.py --rounds 15
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import bench_inputs, bench_llava  # noqa: E402

import trio_vlm  # noqa: E402
from trio_vlm.adapters import adapter_for  # noqa: E402
from trio_vlm.methods.nms import nms_select  # noqa: E402
from trio_vlm.methods.probe import fast_saliency  # noqa: E402

TEXT_BEFORE = 35  # bench_inputs' prompt: text, then the image's tokens, then text


def stage_sequences(model, inputs, method) -> list[tuple[int, torch.Tensor, int, int]]:
    """(layer, hidden entering it, visual tokens entering, visual tokens kept) per stage: the vanilla hidden
    states at that layer, cut to the number of visual tokens the previous stage kept (the probe's cost depends
    on shapes only)."""
    schedule = method.schedule()
    with torch.no_grad():
        hidden_states = model(
            **inputs, output_hidden_states=True, use_cache=False, logits_to_keep=1
        ).hidden_states
    visual = int((inputs["input_ids"][0] == adapter_for(model).image_token_id).sum())
    out, entering = [], visual
    for stage, layer in enumerate(schedule.layer_list):
        h = hidden_states[layer]
        h = torch.cat([h[:, : TEXT_BEFORE + entering], h[:, TEXT_BEFORE + visual :]], dim=1)
        keep = schedule.llm_keep(stage, entering)
        out.append((layer, h, entering, keep))
        entering = keep
    return out


def time_stage(adapter, layer: int, h: torch.Tensor, entering: int, keep: int, rounds: int) -> dict:
    """Median milliseconds of the layer, the fast probe and the NMS on ``h``, and the per-round probe/layer ratio."""
    seq = h.shape[1]
    pos = torch.arange(seq)[None]
    kwargs = {"attention_mask": None, "position_ids": pos, "position_embeddings": adapter.rotary(h, pos)}
    padding, last = torch.ones(1, seq, dtype=torch.bool), torch.tensor([seq - 1])
    vis = slice(TEXT_BEFORE, TEXT_BEFORE + entering)
    scores = fast_saliency(adapter, layer, h, kwargs, last, padding)[0, vis]
    pieces = {
        "layer": lambda: adapter.run_layer(layer, h, kwargs),
        "probe": lambda: fast_saliency(adapter, layer, h, kwargs, last, padding),
        "nms": lambda: nms_select(scores, h[0, vis], keep),
    }
    times: dict[str, list[float]] = {name: [] for name in pieces}
    for round_ in range(rounds + 1):  # round 0 warms up
        for name, fn in pieces.items():
            with torch.no_grad() if name != "probe" else torch.enable_grad():
                start = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - start
            if round_:
                times[name].append(elapsed)
    ratios = [p / q for p, q in zip(times["probe"], times["layer"])]
    return {
        "layer": layer,
        "tokens": seq,
        "visual_in": entering,
        "visual_kept": keep,
        **{f"{name}_ms": 1e3 * statistics.median(t) for name, t in times.items()},
        "probe_per_layer": statistics.median(ratios),
        "probe_per_layer_range": [min(ratios), max(ratios)],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--budget", type=int, default=64)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    model = bench_llava(32, args.hidden, None, 128, 8, "sdpa", device="cpu", dtype=torch.float32)
    inputs = bench_inputs(model)
    adapter = adapter_for(model)
    method = trio_vlm.TRIO.preset(model, args.budget)
    rows = [time_stage(adapter, *stage, args.rounds) for stage in stage_sequences(model, inputs, method)]
    print(f"CPU ({torch.get_num_threads()} threads), float32, LLaVA-1.5 geometry at width {args.hidden}; "
          f"TRIO-{args.budget} w/o VE; {args.rounds} interleaved rounds\n")  # fmt: skip
    print(
        "| stage layer | tokens | visual in → kept | layer (ms) | probe (ms) | NMS (ms) | probe / layer (range) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["probe_per_layer_range"]
        print(f"| {r['layer']} | {r['tokens']} | {r['visual_in']} → {r['visual_kept']} | {r['layer_ms']:.1f} | "
              f"{r['probe_ms']:.1f} | {r['nms_ms']:.1f} | {r['probe_per_layer']:.3f} ({lo:.3f}–{hi:.3f}) |")  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps({"rounds": args.rounds, "stages": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
