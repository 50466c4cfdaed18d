"""Efficiency suite (issue 6): TRIO's prefill against vanilla, the zero-cost oracle and baselines, the probe's
cost relative to one decoder layer, and KV-cache bytes — all measured side by side in one run.

    python benchmarks/bench_efficiency.py                       # CPU: 32 layers, width 1024, 576 tokens
    python benchmarks/bench_efficiency.py --device cuda --dtype bfloat16 --hidden 4096 --intermediate 11008 \\
        --vision-hidden 1024 --vision-layers 24 --geometries llava-1.5,llava-next --batches 1,8   # 7B, GPU

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
from bench_model import bench_inputs, bench_llava, bench_llava_next  # noqa: E402

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
    """A fixed selection with exactly the tokens ``method`` kept in ``run`` (same per-layer tokens)."""
    schedule = method.schedule()
    kept = tuple(tuple(e.kept[0].tolist()) for e in run.events)
    return FixedSelection(layer_list=schedule.layer_list, kept=kept, encoder=schedule.has_encoder_stage)


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
        fast = lambda: fast_saliency(  # noqa: E731
            adapter, stage, hidden, kwargs, last, padding, compile_mode=trio.probe_compile
        )
        ref = lambda: reference_saliency(adapter, stage, hidden, kwargs, last)  # noqa: E731
        vis = (inputs["input_ids"][0] == adapter.image_token_id).nonzero().flatten()
        scores = fast()[0, vis]
        feats = hidden[0, vis]
        keep = trio.schedule().llm_keep(0, vis.numel())
        return {
            "tokens": seq,
            "layer_s": timed(layer, device, repeats),
            "fast_probe_s": timed(fast, device, repeats),
            "reference_probe_s": timed(ref, device, repeats),
            "device_nms_s": timed(lambda: nms_select(scores, feats, keep), device, repeats),
            "loop_nms_s": timed(lambda: nms_select_loop(scores, feats, keep), device, repeats),
        }


def build_configs(model, inputs, budget: int, baselines: list[str], probe_compile: str) -> dict[str, object]:
    """Vanilla, TRIO (fast and authors' configs, w/o and w/ VE), baselines, and the two zero-cost oracles."""
    fast = trio_vlm.TRIO.preset(model, budget, probe_compile=probe_compile)
    w_ve = trio_vlm.TRIO.preset(model, budget, mode="w_ve", probe_compile=probe_compile)
    configs: dict[str, object] = {
        "vanilla": Vanilla(),
        TRIO_KEY: fast,
        "trio (reference probe, loop NMS)": trio_vlm.TRIO.preset(
            model, budget, probe="reference", nms="loop"
        ),
        TRIO_VE_KEY: w_ve,
    }
    for name in baselines:
        if name in available_methods():
            configs[name] = method_class(name).preset(model, budget)
        else:
            logger.info("baseline %s is not registered; skipped", name)
    for key, oracle_key in ((TRIO_KEY, ORACLE_KEY), (TRIO_VE_KEY, ORACLE_VE_KEY)):
        with torch.no_grad(), trio_vlm.apply(model, configs[key]) as run:
            model.generate(**inputs, max_new_tokens=1, do_sample=False)
        configs[oracle_key] = oracle_from(run, configs[key])
    return configs


def measure(
    model, inputs, configs: dict[str, object], rounds: int, decode: int
) -> dict[str, dict[str, float]]:
    """Median prefill / total seconds, KV bytes and measured visual tokens per layer of every config, interleaved
    round by round after one warm-up round."""
    prefill: dict[str, list[float]] = {k: [] for k in configs}
    total: dict[str, list[float]] = {k: [] for k in configs}
    out: dict[str, dict[str, float]] = {k: {} for k in configs}
    for method in configs.values():  # warm-up round
        profile_generate(model, inputs, method, max_new_tokens=decode, warmup=0)
    for r in range(rounds):
        for name, method in configs.items():
            prof = profile_generate(model, inputs, method, max_new_tokens=decode, warmup=0)
            prefill[name].append(prof.prefill_s)
            total[name].append(prof.total_s)
            out[name]["kv_bytes"] = prof.kv_bytes
            out[name]["visual_avg"] = sum(prof.visual_per_layer) / len(prof.visual_per_layer)
        logger.info("round %d/%d done", r + 1, rounds)
    for name in configs:
        out[name]["prefill_s"] = statistics.median(prefill[name])
        out[name]["total_s"] = statistics.median(total[name])
    return out


def print_table(title: str, result: dict[str, dict[str, float]]) -> None:
    base = result["vanilla"]
    print(f"\n{title}\n")
    print(
        "| config | avg visual tokens/layer | prefill (s) | vs vanilla | total (s) | KV cache (MB) | KV vs vanilla |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in result.items():
        print(
            f"| {name} | {r['visual_avg']:.1f} | {r['prefill_s']:.4f} | {base['prefill_s'] / r['prefill_s']:.2f}x | "
            f"{r['total_s']:.4f} | {r['kv_bytes'] / 2**20:.2f} | {base['kv_bytes'] / r['kv_bytes']:.2f}x |"
        )


TRIO_KEY = "trio w/o VE (fast probe, device NMS)"
TRIO_VE_KEY = "trio w/ VE"
ORACLE_KEY = "oracle w/o VE (TRIO's tokens, no selection)"
ORACLE_VE_KEY = "oracle w/ VE"


def targets(results: dict, costs: dict, on_gpu: bool) -> list[tuple[str, float, str, bool]]:
    """Every ratio of issue 16 with its target: (name, value, target, met)."""
    rows = []

    def add(name: str, value: float, limit: float) -> None:
        rows.append((name, value, f"<= {limit}", value <= limit))

    for (geometry, batch), result in results.items():
        tag = f"{geometry} batch {batch}"
        add(
            f"{tag}: TRIO w/o VE prefill / oracle",
            result[TRIO_KEY]["prefill_s"] / result[ORACLE_KEY]["prefill_s"],
            1.10,
        )
        add(
            f"{tag}: TRIO w/ VE prefill / oracle",
            result[TRIO_VE_KEY]["prefill_s"] / result[ORACLE_VE_KEY]["prefill_s"],
            1.05,
        )
        add(
            f"{tag}: oracle prefill / vanilla",
            result[ORACLE_KEY]["prefill_s"] / result["vanilla"]["prefill_s"],
            1.0,
        )
        add(
            f"{tag}: TRIO w/ VE prefill / vanilla",
            result[TRIO_VE_KEY]["prefill_s"] / result["vanilla"]["prefill_s"],
            1.0,
        )
    for geometry, cost in costs.items():
        add(
            f"{geometry}: fast probe / one decoder layer",
            cost["fast_probe_s"] / cost["layer_s"],
            1.0 if on_gpu else 0.5,
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--geometries", default="llava-1.5", help="comma list of llava-1.5, llava-next")
    p.add_argument("--batches", default="1", help="comma list of batch sizes (identical prompts per batch)")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--intermediate", type=int, default=None)
    p.add_argument("--vision-hidden", type=int, default=128)
    p.add_argument("--vision-layers", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    p.add_argument("--budget", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--decode-tokens", type=int, default=8)
    p.add_argument(
        "--probe-compile", default="auto", help="TRIO's probe_compile (auto: CUDA graphs on a GPU)"
    )
    p.add_argument(
        "--baselines", default="fastv,pdrop,dart", help="comma list; unregistered ones are skipped"
    )
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    dev = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    baselines = [b for b in args.baselines.split(",") if b]
    results: dict[tuple[str, int], dict] = {}
    costs: dict[str, dict[str, float]] = {}
    for geometry in args.geometries.split(","):
        build = {"llava-1.5": bench_llava, "llava-next": bench_llava_next}[geometry]
        model = build(
            args.layers, args.hidden, args.intermediate, args.vision_hidden, args.vision_layers, args.attn,
            device=args.device, dtype=dtype,
        )  # fmt: skip
        one = bench_inputs(model)
        one = {k: v.to(device) for k, v in one.items()}
        one["pixel_values"] = one["pixel_values"].to(dtype)
        for batch in (int(b) for b in args.batches.split(",")):
            inputs = {k: v.repeat(batch, *([1] * (v.dim() - 1))) for k, v in one.items()}
            configs = build_configs(model, inputs, args.budget, baselines, args.probe_compile)
            results[(geometry, batch)] = measure(model, inputs, configs, args.rounds, args.decode_tokens)
            prompt = inputs["input_ids"].shape[1]
            print_table(
                f"{dev}; {args.dtype}; {args.attn}; {geometry} LLM {args.layers}x{args.hidden}; prompt {prompt} tokens; "
                f"batch {batch}; rounds {args.rounds}",
                results[(geometry, batch)],
            )
        costs[geometry] = probe_costs(model, one, configs[TRIO_KEY], args.rounds)
        print(f"\n{geometry}: probe and selection at TRIO's first stage (one prompt)\n")
        print("| piece | seconds | / one layer forward |\n|---|---|---|")
        for key in ("layer_s", "fast_probe_s", "reference_probe_s", "device_nms_s", "loop_nms_s"):
            print(
                f"| {key[:-2]} | {costs[geometry][key]:.4f} | {costs[geometry][key] / costs[geometry]['layer_s']:.2f} |"
            )
        del model
    rows = targets(results, costs, device.type == "cuda")
    print("\ntargets (issue 16), all from this run:\n")
    print("| ratio | measured | target | met |\n|---|---|---|---|")
    for name, value, target, met in rows:
        print(f"| {name} | {value:.3f} | {target} | {'yes' if met else 'NO'} |")
    if args.json_out:
        payload = {
            "device": dev,
            "args": vars(args) | {"json_out": str(args.json_out)},
            "results": {f"{g} batch {b}": r for (g, b), r in results.items()},
            "probe_costs": costs,
            "targets": [{"ratio": n, "measured": v, "target": t, "met": m} for n, v, t, m in rows],
        }
        args.json_out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
