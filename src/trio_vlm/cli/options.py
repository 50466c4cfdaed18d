"""Options several commands share: the method (name, budget, mode, explicit schedule lists), model and device."""

from __future__ import annotations

import argparse
import json
from itertools import pairwise
from typing import Any

import torch

from trio_vlm.generation import generation_kwargs
from trio_vlm.methods.base import MODES
from trio_vlm.methods.registry import available_methods
from trio_vlm.methods.request import MethodRequest
from trio_vlm.presets import DEFAULT_BUDGET


def parse_int_list(text: str, option: str, *, increasing: bool = False) -> list[int]:
    """Parse a JSON list of positive integers such as ``"[16]"``; ``ValueError`` names ``option``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{option} must be a JSON list of integers such as '[16]', got {text!r}") from exc
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{option} must be a JSON list of integers such as '[16]', got {text!r}")
    if any(v < 1 for v in value):
        raise ValueError(f"{option} entries must be >= 1, got {value}")
    if increasing and any(b <= a for a, b in pairwise(value)):
        raise ValueError(f"{option} must be strictly increasing, got {value}")
    return value


def parse_ratio_list(text: str, option: str) -> list[float]:
    """Parse a JSON list of fractions in (0, 1] such as ``"[0.333]"``; ``ValueError`` names ``option``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{option} must be a JSON list of fractions such as '[0.333]', got {text!r}"
        ) from exc
    ok = isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )
    if not ok:
        raise ValueError(f"{option} must be a JSON list of fractions such as '[0.333]', got {text!r}")
    if any(not 0 < v <= 1 for v in value):
        raise ValueError(f"{option} entries must lie in (0, 1], got {value}")
    return [float(v) for v in value]


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
    options: dict[str, Any] = {}
    if args.layer_list is not None:
        options["layer_list"] = parse_int_list(args.layer_list, "--layer-list", increasing=True)
    if args.image_token_list is not None:
        options["image_token_list"] = parse_int_list(args.image_token_list, "--image-token-list")
    if args.visual_token_num is not None:
        if args.visual_token_num < 1:
            raise ValueError(f"--visual-token-num must be >= 1, got {args.visual_token_num}")
        if args.mode == "wo_ve":
            raise ValueError("--visual-token-num sets the encoder stage, which --mode wo_ve turns off")
        options["visual_token_num"] = args.visual_token_num
    if args.image_token_ratio is not None:
        if not 0 < args.image_token_ratio <= 1:
            raise ValueError(f"--image-token-ratio must lie in (0, 1], got {args.image_token_ratio}")
        if args.mode == "wo_ve":
            raise ValueError("--image-token-ratio sets the encoder stage, which --mode wo_ve turns off")
        options["image_token_ratio"] = args.image_token_ratio
    if args.image_token_ratio_list is not None:
        if args.image_token_list is not None:
            raise ValueError("give --image-token-list or --image-token-ratio-list, not both")
        options["image_token_ratio_list"] = parse_ratio_list(
            args.image_token_ratio_list, "--image-token-ratio-list"
        )
        options["image_token_list"] = []
    if args.reference_quirks:
        options["reference_quirks"] = True
    if args.budget is not None and args.budget < 1:
        raise ValueError(f"--budget must be >= 1, got {args.budget}")
    return MethodRequest(args.method, args.budget, args.mode, tuple(options.items()))


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
