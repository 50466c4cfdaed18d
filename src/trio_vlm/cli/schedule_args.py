"""Schedule options shared by every command: parse them and turn them into a pruning method."""

from __future__ import annotations

import argparse
import dataclasses
import json
from itertools import pairwise
from typing import Any

from trio_vlm.methods.registry import available_methods, method_class

DEFAULT_BUDGET = 64
DEFAULT_PRESET = "llava-1.5"
MODES = ("w_ve", "wo_ve")
# LLaVA-1.5's decoder depth and visual tokens per image, which the presets are written for.
PRESET_LAYERS = 32
PRESET_VISUAL_TOKENS = 576


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


def add_schedule_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--method``, the preset options, the explicit schedule lists and ``--vanilla``."""
    group = parser.add_argument_group("pruning schedule (explicit lists override the preset)")
    group.add_argument("--method", choices=available_methods(), default="trio", help="pruning method")
    group.add_argument("--preset", default=DEFAULT_PRESET, help="model family the budget preset targets")
    group.add_argument(
        "--budget", type=int, help=f"average visual tokens per layer (default {DEFAULT_BUDGET})"
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
    group.add_argument("--vanilla", action="store_true", help="no pruning: the unmodified model")


def _explicit_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if args.layer_list is not None:
        overrides["layer_list"] = parse_int_list(args.layer_list, "--layer-list", increasing=True)
    if args.image_token_list is not None:
        overrides["image_token_list"] = parse_int_list(args.image_token_list, "--image-token-list")
    if args.visual_token_num is not None:
        if args.visual_token_num < 1:
            raise ValueError(f"--visual-token-num must be >= 1, got {args.visual_token_num}")
        if args.mode == "wo_ve":
            raise ValueError("--visual-token-num sets the encoder stage, which --mode wo_ve turns off")
        overrides["visual_token_num"] = args.visual_token_num
    ratio = getattr(args, "image_token_ratio", None)
    if ratio is not None:
        if not 0 < ratio <= 1:
            raise ValueError(f"--image-token-ratio must lie in (0, 1], got {ratio}")
        if args.mode == "wo_ve":
            raise ValueError("--image-token-ratio sets the encoder stage, which --mode wo_ve turns off")
        overrides["image_token_ratio"] = ratio
    ratio_list = getattr(args, "image_token_ratio_list", None)
    if ratio_list is not None:
        if args.image_token_list is not None:
            raise ValueError("give --image-token-list or --image-token-ratio-list, not both")
        overrides["image_token_ratio_list"] = parse_ratio_list(ratio_list, "--image-token-ratio-list")
        overrides["image_token_list"] = []
    return overrides


def _check_fields(cls: type, overrides: dict[str, Any], method: str) -> None:
    """``ValueError`` naming the option a method does not take (fraction schedules are TRIO's so far)."""
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    for key in ("image_token_ratio", "image_token_ratio_list"):
        if key in overrides and key not in names:
            raise ValueError(f"method {method!r} does not take --{key.replace('_', '-')}")


def scale_schedule(method: Any, num_layers: int, num_visual: int) -> Any:
    """Shrink a LLaVA-1.5 preset to a smaller model, keeping the relative depth and token fractions."""
    schedule = method.schedule()

    def tokens(count: int) -> int:
        return max(1, round(count * num_visual / PRESET_VISUAL_TOKENS))

    layers: list[int] = []
    for layer in schedule.layer_list:
        layers.append(max(round(layer * num_layers / PRESET_LAYERS), layers[-1] + 1 if layers else 1))
    if layers and layers[-1] >= num_layers:
        raise ValueError(f"cannot scale layer_list {list(schedule.layer_list)} to a {num_layers}-layer model")
    visual = None if schedule.visual_token_num is None else tokens(schedule.visual_token_num)
    return dataclasses.replace(
        method,
        layer_list=layers,
        image_token_list=[tokens(c) for c in schedule.image_token_list],
        visual_token_num=visual,
    )


def uses_preset(args: argparse.Namespace) -> bool:
    """Whether the method starts from a preset: unless both lists are given without ``--budget``."""
    counts = (
        args.image_token_list
        if args.image_token_list is not None
        else getattr(args, "image_token_ratio_list", None)
    )
    return args.budget is not None or args.layer_list is None or counts is None


def build_method(args: argparse.Namespace, *, scale_to: tuple[int, int] | None = None) -> Any | None:
    """The method the options describe, or ``None`` for ``--vanilla``.

    With both lists given and no ``--budget``, the method is built from the lists alone (``--mode w_ve``
    then requires ``--visual-token-num``). Otherwise the ``--preset``/``--budget``/``--mode`` preset is
    the base and any explicit option replaces its field. ``scale_to=(num_layers, num_visual)`` shrinks
    a preset (not explicit lists) to a small model, as the bundled demo does.
    """
    overrides = _explicit_overrides(args)
    if args.vanilla:
        if overrides or args.budget is not None or args.mode is not None:
            raise ValueError("--vanilla cannot be combined with --budget, --mode or schedule lists")
        return None
    if args.budget is not None and args.budget < 1:
        raise ValueError(f"--budget must be >= 1, got {args.budget}")
    cls = method_class(args.method)
    _check_fields(cls, overrides, args.method)
    if not uses_preset(args):
        if args.mode == "w_ve" and "visual_token_num" not in overrides:
            raise ValueError("--mode w_ve with explicit lists needs --visual-token-num (or use --mode wo_ve)")
        return cls(**overrides)
    budget = DEFAULT_BUDGET if args.budget is None else args.budget
    mode = {} if args.mode is None else {"mode": args.mode}  # else the method's own default mode
    method = cls.preset(args.preset, budget=budget, **mode)
    if scale_to is not None:
        method = scale_schedule(method, *scale_to)
    return dataclasses.replace(method, **overrides) if overrides else method


def schedule_summary(method: Any | None) -> dict[str, Any]:
    """A JSON-ready description of ``method``'s schedule (``{"method": "vanilla"}`` for ``None``)."""
    if method is None:
        return {"method": "vanilla"}
    schedule = method.schedule()
    return {
        "method": getattr(method, "name", type(method).__name__),
        "layer_list": list(schedule.layer_list),
        "image_token_list": list(schedule.image_token_list),
        "visual_token_num": schedule.visual_token_num,
        **(
            {"image_token_ratio": schedule.image_token_ratio}
            if schedule.image_token_ratio is not None
            else {}
        ),
        **(
            {"image_token_ratio_list": list(schedule.image_token_ratio_list)}
            if schedule.image_token_ratio_list
            else {}
        ),
    }
