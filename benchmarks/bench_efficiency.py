"""Efficiency suite (issue 6): TRIO's prefill against vanilla, the zero-cost oracle and baselines, the probe's
cost relative to one decoder layer, and KV-cache bytes — all measured side by side in one run.

    python benchmarks/bench_efficiency.py                       # CPU: 32 layers, width 1024, 576 tokens
    python benchmarks/bench_efficiency.py --device cuda --dtype bfloat16 --hidden 4096 --intermediate 11008 \\
        --vision-hidden 1024 --vision-layers 24                 # LLaVA-1.5-7B geometry on a GPU

Every figure is a ratio of timings taken in the same process, interleaved round by round (median over rounds).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import bench_inputs, bench_llava  # noqa: E402

import trio_vlm  # noqa: E402
from trio_vlm.adapters import adapter_for  # noqa: E402
from trio_vlm.methods.fixed import FixedSelection, Vanilla  # noqa: E402
from trio_vlm.methods.nms import nms_select, nms_select_loop  # noqa: E402
from trio_vlm.methods.probe import fast_saliency, reference_saliency  # noqa: E402
from trio_vlm.methods.registry import available_methods, method_class  # noqa: E402
from trio_vlm.profiling.measure import profile_generate  # noqa: E402

logger = logging.getLogger("bench")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def oracle_from(run, method) -> FixedSelection:
    """A fixed selection with exactly the tokens ``method`` kept in ``run`` (same per-layer counts)."""
    schedule = method.schedule()
    kept = tuple(tuple(e.kept[0].tolist()) for e in run.events)
    return FixedSelection(
        layer_list=schedule.layer_list, kept=kept, visual_token_num=schedule.visual_token_num
    )


def probe_costs(model, inputs, trio, repeats: int) -> dict[str, float]:
    """Seconds of one decoder layer, the fast and reference probes and both NMS at TRIO's first LLM stage."""
    adapter = adapter_for(model)
    device = next(model.parameters()).device
    stage = trio.schedule().layer_list[0]
    inputs = {k: v[:1] for k, v in inputs.items()}  # one sample: the per-prompt cost
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, use_cache=False, logits_to_keep=1)
        hidden = out.hidden_states[stage]  # entering layer index `stage` (vanilla sequence)
        seq = hidden.shape[1]
        pos = torch.arange(seq, device=device)[None]
        kwargs = {
            "attention_mask": None,
            "position_ids": pos,
            "position_embeddings": adapter.rotary(hidden, pos),
        }
        padding = torch.ones(1, seq, dtype=torch.bool, device=device)
        last = torch.tensor([seq - 1], device=device)
        layer = lambda: adapter.run_layer(stage, hidden, kwargs)  # noqa: E731
        fast = lambda: fast_saliency(adapter, stage, hidden, kwargs, last, padding)  # noqa: E731
        ref = lambda: reference_saliency(adapter, stage, hidden, kwargs, last)  # noqa: E731
        vis = (inputs["input_ids"][0] == adapter.image_token_id).nonzero().flatten()
        scores = fast()[0, vis]
        feats = hidden[0, vis]
        keep = trio.schedule().image_token_list[0]
        return {
            "tokens": seq,
            "layer_s": timed(layer, device, repeats),
            "fast_probe_s": timed(fast, device, repeats),
            "reference_probe_s": timed(ref, device, repeats),
            "device_nms_s": timed(lambda: nms_select(scores, feats, keep), device, repeats),
            "loop_nms_s": timed(lambda: nms_select_loop(scores, feats, keep), device, repeats),
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--intermediate", type=int, default=None)
    p.add_argument("--vision-hidden", type=int, default=128)
    p.add_argument("--vision-layers", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    p.add_argument("--budget", type=int, default=64)
    p.add_argument("--batch", type=int, default=1, help="identical prompts per batch (throughput regime)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--decode-tokens", type=int, default=8)
    p.add_argument(
        "--baselines", default="fastv,pdrop,dart", help="comma list; unregistered ones are skipped"
    )
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)

    model = bench_llava(
        args.layers, args.hidden, args.intermediate, args.vision_hidden, args.vision_layers, args.attn
    ).to(device=device, dtype=dtype)
    inputs = {k: v.to(device) for k, v in bench_inputs(model).items()}
    inputs = {k: v.repeat(args.batch, *([1] * (v.dim() - 1))) for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)

    configs: dict[str, object] = {
        "vanilla": Vanilla(),
        f"trio-{args.budget} (fast probe, device NMS)": trio_vlm.TRIO.preset(model, args.budget),
        f"trio-{args.budget} (reference probe, loop NMS)": trio_vlm.TRIO.preset(
            model, args.budget, probe="reference", nms="loop"
        ),
        f"trio-{args.budget} w/ VE": trio_vlm.TRIO.preset(model, args.budget, mode="w_ve"),
    }
    for name in [b for b in args.baselines.split(",") if b]:
        if name in available_methods():
            configs[f"{name}-{args.budget}"] = method_class(name).preset(model, args.budget)
        else:
            logger.info("baseline %s is not registered; skipped", name)
    trio_key = f"trio-{args.budget} (fast probe, device NMS)"
    with torch.no_grad(), trio_vlm.apply(model, configs[trio_key]) as run:
        model.generate(**inputs, max_new_tokens=1, do_sample=False)
    configs[f"oracle-{args.budget} (TRIO's tokens, no selection)"] = oracle_from(run, configs[trio_key])
    configs[f"oracle-{args.budget} w/ VE"] = None  # filled below
    with torch.no_grad(), trio_vlm.apply(model, configs[f"trio-{args.budget} w/ VE"]) as run_ve:
        model.generate(**inputs, max_new_tokens=1, do_sample=False)
    configs[f"oracle-{args.budget} w/ VE"] = oracle_from(run_ve, configs[f"trio-{args.budget} w/ VE"])

    prefill: dict[str, list[float]] = {k: [] for k in configs}
    total: dict[str, list[float]] = {k: [] for k in configs}
    kv: dict[str, int] = {}
    visual_avg: dict[str, float] = {}
    for method in configs.values():  # warm-up round
        profile_generate(model, inputs, method, max_new_tokens=args.decode_tokens, warmup=0)
    for r in range(args.rounds):
        for name, method in configs.items():
            prof = profile_generate(model, inputs, method, max_new_tokens=args.decode_tokens, warmup=0)
            prefill[name].append(prof.prefill_s)
            total[name].append(prof.total_s)
            kv[name] = prof.kv_bytes
            visual_avg[name] = sum(prof.visual_per_layer) / len(prof.visual_per_layer)
        logger.info("round %d/%d done", r + 1, args.rounds)
    costs = probe_costs(model, inputs, configs[trio_key], args.rounds)

    med = {k: statistics.median(v) for k, v in prefill.items()}
    med_total = {k: statistics.median(v) for k, v in total.items()}
    dev = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"\ndevice: {dev}; dtype {args.dtype}; attention {args.attn}; LLM {args.layers}x{args.hidden}; "
        f"prompt {inputs['input_ids'].shape[1]} tokens (576 visual); rounds {args.rounds}\n"
    )
    print(
        "| config | avg visual tokens/layer | prefill (s) | vs vanilla | total (s) | KV cache (MB) | KV vs vanilla |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in configs:
        print(
            f"| {name} | {visual_avg[name]:.1f} | {med[name]:.4f} | {med['vanilla'] / med[name]:.2f}x | "
            f"{med_total[name]:.4f} | {kv[name] / 2**20:.2f} | {kv['vanilla'] / kv[name]:.2f}x |"
        )
    oracle_key = f"oracle-{args.budget} (TRIO's tokens, no selection)"
    seq = inputs["input_ids"].shape[1]
    theory = (seq * args.layers) / sum(seq - 576 + v for v in [visual_avg[trio_key]] * args.layers)
    ratios = {
        "trio_over_oracle_prefill": med[trio_key] / med[oracle_key],
        "trio_w_ve_over_oracle_prefill": med[f"trio-{args.budget} w/ VE"]
        / med[f"oracle-{args.budget} w/ VE"],
        "reference_trio_over_oracle_prefill": med[f"trio-{args.budget} (reference probe, loop NMS)"]
        / med[oracle_key],
        "fast_probe_over_layer": costs["fast_probe_s"] / costs["layer_s"],
        "reference_probe_over_layer": costs["reference_probe_s"] / costs["layer_s"],
        "loop_nms_over_device_nms": costs["loop_nms_s"] / costs["device_nms_s"],
        "kv_ratio_measured": kv["vanilla"] / kv[trio_key],
        "kv_ratio_theoretical": theory,
    }
    print("\n| probe/selection piece at the first stage | seconds | / one layer forward |")
    print("|---|---|---|")
    for key in ("layer_s", "fast_probe_s", "reference_probe_s", "device_nms_s", "loop_nms_s"):
        print(f"| {key[:-2]} | {costs[key]:.4f} | {costs[key] / costs['layer_s']:.2f} |")
    print("\ntargets:")
    print(
        f"  TRIO-{args.budget} prefill / oracle = {ratios['trio_over_oracle_prefill']:.3f} (target <= 1.10); "
        f"w/ VE {ratios['trio_w_ve_over_oracle_prefill']:.3f}; authors' config "
        f"{ratios['reference_trio_over_oracle_prefill']:.3f}"
    )
    print(
        f"  fast probe / one layer = {ratios['fast_probe_over_layer']:.3f} (target <= 0.5); "
        f"reference probe / one layer = {ratios['reference_probe_over_layer']:.2f}"
    )
    print(
        f"  KV cache ratio measured {ratios['kv_ratio_measured']:.3f} vs theoretical {ratios['kv_ratio_theoretical']:.3f}"
    )
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "device": dev,
                    "args": vars(args) | {"json_out": str(args.json_out)},
                    "prefill_s": prefill,
                    "total_s": total,
                    "kv_bytes": kv,
                    "visual_avg": visual_avg,
                    "probe": costs,
                    "ratios": ratios,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
