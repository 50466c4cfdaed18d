"""``trio-vlm profile``: the paper's efficiency table (prefill, total, FLOPs, KV cache) for a method vs vanilla."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from trio_vlm.bundled import bundled_image_path, default_model_dir
from trio_vlm.cli.options import (
    add_device_arguments,
    add_method_arguments,
    check_device,
    describe_method,
    method_request,
)
from trio_vlm.generation import prepare_inputs
from trio_vlm.llava_format import read_questions
from trio_vlm.loading import load_image, load_model_and_processor
from trio_vlm.methods.fixed import Vanilla
from trio_vlm.presets import shape_of
from trio_vlm.profiling.measure import RunProfile, profile_generate, summarise
from trio_vlm.prompts import check_conv_mode, prompt_for, resolve_conv_mode


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``profile`` command."""
    parser = subparsers.add_parser(
        "profile", help="measure prefill/total time, FLOPs and KV cache vs vanilla"
    )
    parser.add_argument("--model", help="hub id or local folder (default: the bundled tiny model)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--data", help="question file (JSONL: question_id, image, text), as answer-file reads"
    )
    source.add_argument("--image", help="one image (with --question)")
    parser.add_argument("--image-folder", default=".", help="folder the question file's images are in")
    parser.add_argument("--question", default="Describe the image.")
    parser.add_argument("--limit", type=int, help="profile only the first N questions")
    parser.add_argument("--conv-mode", default="auto")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs of each side before the first")
    parser.add_argument("--per-run", action="store_true", help="also print one row per question")
    parser.add_argument("--json-out", type=Path, help="write every run and the sums as JSON")
    add_device_arguments(parser)
    add_method_arguments(parser)
    parser.set_defaults(func=run)


def _items(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.data:
        questions = read_questions(args.data)[: args.limit]
        items = [(str(Path(args.image_folder) / q.image), q.text) for q in questions]
    else:
        items = [(args.image or str(bundled_image_path()), args.question)]
    for path, _ in items:
        if not Path(path).is_file():
            raise FileNotFoundError(f"image file not found: {path}")
    return items


def _row(name: str, s: dict[str, float], base: dict[str, float] | None) -> str:
    def ratio(key: str) -> str:
        if base is None or not s[key]:
            return ""
        return f" ({base[key] / s[key]:.2f}x)"

    return (
        f"| {name} | {s['mean_visual_tokens']:.1f} | {s['prefill_s']:.3f}{ratio('prefill_s')} | "
        f"{s['total_s']:.3f}{ratio('total_s')} | {s['tflops_fastv']:.4g}{ratio('tflops_fastv')} | "
        f"{s['probe_tflops']:.4g} | {s['kv_mb']:.2f}{ratio('kv_mb')} |"
    )


def run(args: argparse.Namespace) -> int:
    """Profile vanilla and the method on every input, interleaved, then print the paper-format table."""
    request = method_request(args)
    check_conv_mode(args.conv_mode)
    check_device(args.device)
    items = _items(args)
    bundled = args.model is None
    model_dir = str(default_model_dir()) if bundled else args.model
    model, processor = load_model_and_processor(
        model_dir, device=args.device, dtype=args.dtype, device_map=args.device_map
    )
    shape = shape_of(model)
    method = request.build(shape)
    conv_mode = resolve_conv_mode(args.conv_mode, shape.family)
    sides = {"vanilla": Vanilla()} if request.is_vanilla else {"vanilla": Vanilla(), method.name: method}
    runs: dict[str, list[RunProfile]] = {name: [] for name in sides}
    for i, (path, question) in enumerate(tqdm(items, desc="profile", unit="q", disable=len(items) < 2)):
        inputs = prepare_inputs(
            model, processor, load_image(path), prompt_for(question, conv_mode, processor)
        )
        for name, m in sides.items():
            runs[name].append(
                profile_generate(
                    model, dict(inputs), m, args.max_new_tokens, warmup=args.warmup if i == 0 else 0
                )
            )
    sums = {name: summarise(profiles) for name, profiles in runs.items()}
    print(f"model: {model_dir}" + (" (bundled tiny model)" if bundled else ""))
    print(f"method: {describe_method(method, shape)}; runs: {len(items)}; device: {args.device}")
    if args.per_run:
        print("\n| run | method | prefill (s) | total (s) | visual tokens per layer |")
        print("|---|---|---|---|---|")
        for name, profiles in runs.items():
            for i, p in enumerate(profiles):
                print(f"| {i} | {name} | {p.prefill_s:.4f} | {p.total_s:.4f} | {p.visual_per_layer} |")
    print(
        "\n| | avg visual tokens/layer | Prefill (s) | Total (s) | FLOPs (T) | probe FLOPs (T) | KV cache (MB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, s in sums.items():
        print(_row(name, s, None if name == "vanilla" else sums["vanilla"]))
    print(
        "\nFLOPs: FastV's per-layer 4nd²+2n²d+2ndm over decoder layers (paper convention; probe shown apart, "
        "forward+backward at 2 FLOPs per multiply-add). KV cache: bytes held after prefill."
    )
    if args.json_out:
        payload = {
            "model": model_dir,
            "method": method.describe(),
            "sums": sums,
            "runs": {k: [p.to_dict() for p in v] for k, v in runs.items()},
        }
        args.json_out.write_text(json.dumps(payload, indent=2))
    return 0
