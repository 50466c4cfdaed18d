"""Options several commands share: the method (name, budget, mode, explicit schedule lists), model and device."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from trio_vlm.generation import generation_kwargs
from trio_vlm.method_options import SCHEDULE_OPTIONS, method_request_from
from trio_vlm.methods.base import MODES
from trio_vlm.methods.registry import available_methods
from trio_vlm.methods.request import MethodRequest
from trio_vlm.presets import DEFAULT_BUDGET


def add_method_arguments(parser: argparse.ArgumentParser, default: str = "trio") -> None:
    """``--method``, ``--budget``, ``--mode`` and the explicit schedule lists (which override the preset)."""
    group = parser.add_argument_group("method (explicit lists override the preset)")
    group.add_argument("--method", choices=available_methods(), default=default, help="'vanilla': no pruning")
    group.add_argument(
        "--budget",
        type=int,
        help=f"average visual tokens per decoder layer (default {DEFAULT_BUDGET}); the method's published "
        "schedule is fitted to the model",
    )
    group.add_argument("--mode", choices=MODES, help="with (w_ve) or without (wo_ve) the encoder stage")
    group.add_argument("--layer-list", help="JSON list: decoder layers run before each drop, e.g. '[16]'")
    group.add_argument("--image-token-list", help="JSON list: visual tokens kept by each drop, e.g. '[32]'")
    group.add_argument("--visual-token-num", type=int, help="visual tokens kept by the encoder stage")
    group.add_argument(
        "--image-token-ratio",
        type=float,
        help="encoder stage as a fraction of each image's tokens (variable-resolution models), e.g. 0.167",
    )
    group.add_argument(
        "--image-token-ratio-list",
        help="JSON list: fraction of the tokens each LLM drop keeps, e.g. '[0.333]' (instead of --image-token-list)",
    )
    group.add_argument(
        "--reference-quirks",
        action="store_true",
        help="TRIO: reproduce the authors' published Qwen2.5-VL / LLaVA-NeXT code where it departs from the "
        "paper (docs/families.md); default: the paper's algorithm",
    )


def method_request(args: argparse.Namespace) -> MethodRequest:
    """The :class:`~trio_vlm.methods.request.MethodRequest` the options describe (``ValueError`` naming a bad
    option)."""
    schedule = {name: getattr(args, name) for name in SCHEDULE_OPTIONS}
    return method_request_from(
        args.method, args.budget, args.mode, reference_quirks=args.reference_quirks, **schedule
    )


def add_pad_arguments(parser: Any) -> None:
    """``--pad-square`` / ``--no-pad-square`` (default: the family's reference evaluation — LLaVA-1.5 pads)."""
    pad = parser.add_mutually_exclusive_group()
    pad.add_argument(
        "--pad-square", dest="pad_square", action="store_true", default=None, help="pad images to a square"
    )
    pad.add_argument(
        "--no-pad-square",
        dest="pad_square",
        action="store_false",
        default=None,
        help="do not pad (default: pad for LLaVA-1.5 only, as each family's reference evaluation)",
    )


def add_device_arguments(parser: Any, device_map: bool = True) -> None:
    """``--device``, ``--dtype`` and (optionally) ``--device-map``."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
    parser.add_argument("--dtype", default="auto", help="auto (the checkpoint's), float16, bfloat16, float32")
    if device_map:
        parser.add_argument("--device-map", help="e.g. 'auto': spread a large model over the visible GPUs")


def describe_method(method: Any, shape: Any) -> str:
    """``trio(layer_list=[1, 10, 15], …)`` with its planned average tokens per layer on ``shape``."""
    summary = method.describe()
    keys = (
        "layer_list",
        "image_token_list",
        "visual_token_num",
        "image_token_ratio",
        "image_token_ratio_list",
        "reference_quirks",
    )
    shown = {k: summary.get(k) for k in keys}
    lists = ", ".join(f"{k}={v}" for k, v in shown.items() if v not in (None, [], ()) and v is not False)
    average = method.average_tokens(shape.num_layers, shape.visual)
    if shape.variable:  # tokens per image vary: the share of an image's tokens, which the schedule fixes
        share = 100 * average / shape.visual
        return (
            f"{summary['method']}({lists}) — {share:.1f}% of each image's visual tokens per layer on average"
        )
    return f"{summary['method']}({lists}) — {average:.1f} visual tokens per layer on average"


def add_generation_arguments(parser: Any, max_new_tokens: int) -> None:
    """``--temperature`` (0: greedy), ``--top-p``, ``--num-beams``, ``--max-new-tokens`` (LLaVA's names too)."""
    parser.add_argument("--temperature", type=float, default=0.0, help="0 means greedy decoding")
    parser.add_argument(
        "--top-p", "--top_p", dest="top_p", type=float, help="nucleus sampling (with --temperature)"
    )
    parser.add_argument(
        "--num-beams", "--num_beams", dest="num_beams", type=int, default=1, help="beam search"
    )
    parser.add_argument(
        "--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=int, default=max_new_tokens
    )


def generation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``generate`` options of :func:`add_generation_arguments`, checked (``ValueError`` names the bad one)."""
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0 (0 means greedy decoding), got {args.temperature}")
    if args.num_beams < 1:
        raise ValueError(f"--num-beams must be >= 1, got {args.num_beams}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p must lie in (0, 1], got {args.top_p}")
    return generation_kwargs(args.max_new_tokens, args.temperature, args.top_p, args.num_beams)


def check_device(device: str) -> None:
    """``ValueError`` for a device string torch does not know, or a CUDA device on a machine without CUDA."""
    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(
            f"--device {device!r} is not a device torch knows ({exc}); use cpu or cuda"
        ) from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
