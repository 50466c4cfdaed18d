"""A method asked for in text: the CLI's flags and the lmms-eval plugin's model args, parsed by one set of rules.

``--layer-list '[16]'`` on the command line and ``layer_list=[16]`` in lmms-eval's ``--model_args`` become the
same :class:`~trio_vlm.methods.request.MethodRequest`; JSON lists are parsed, never evaluated, and every error
names the option as the user wrote it (``flag``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from trio_vlm.methods.request import MethodRequest

#: The explicit schedule options (they override the preset).
SCHEDULE_OPTIONS = (
    "layer_list",
    "image_token_list",
    "visual_token_num",
    "image_token_ratio",
    "image_token_ratio_list",
)


def cli_flag(name: str) -> str:
    """``layer_list`` → ``--layer-list``."""
    return "--" + name.replace("_", "-")


def _as_list(value: Any, option: str, example: str, kind: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, list):
        raise ValueError(f"{option} must be a JSON list of {kind} such as '{example}', got {value!r}")
    return parsed


def parse_int_list(text: Any, option: str, *, increasing: bool = False) -> list[int]:
    """Parse a JSON list of positive integers such as ``"[16]"`` (or take a list); ``ValueError`` names
    ``option``."""
    value = _as_list(text, option, "[16]", "integers")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{option} must be a JSON list of integers such as '[16]', got {text!r}")
    if any(v < 1 for v in value):
        raise ValueError(f"{option} entries must be >= 1, got {value}")
    if increasing and any(b <= a for a, b in pairwise(value)):
        raise ValueError(f"{option} must be strictly increasing, got {value}")
    return value


def parse_ratio_list(text: Any, option: str) -> list[float]:
    """Parse a JSON list of fractions in (0, 1] such as ``"[0.333]"`` (or take a list); ``ValueError`` names
    ``option``."""
    value = _as_list(text, option, "[0.333]", "fractions")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{option} must be a JSON list of fractions such as '[0.333]', got {text!r}")
    if any(not 0 < v <= 1 for v in value):
        raise ValueError(f"{option} entries must lie in (0, 1], got {value}")
    return [float(v) for v in value]


def _number(value: Any, option: str, kind: type) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{option} must be a number, got {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{option} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
        ) from None
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{option} must be an integer, got {value!r}")
    return number


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))


def as_bool(value: Any, option: str) -> bool:
    """``True``/``False``, also as text (``true``/``1``/``yes``, ``false``/``0``/``no``)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", "", "none"):
        return False
    raise ValueError(f"{option} must be true or false, got {value!r}")


def method_request_from(
    method: str = "trio",
    budget: Any = None,
    mode: Any = None,
    *,
    reference_quirks: Any = False,
    flag: Callable[[str], str] = cli_flag,
    **schedule: Any,
) -> MethodRequest:
    """The request the options describe: ``method``, ``budget`` (average visual tokens per decoder layer),
    ``mode``, the explicit schedule lists of :data:`SCHEDULE_OPTIONS` (text or values) and TRIO's
    ``reference_quirks``. ``ValueError`` names a bad option as ``flag(name)`` spells it."""
    unknown = sorted(set(schedule) - set(SCHEDULE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown schedule option(s): {', '.join(flag(u) for u in unknown)}")
    given = {k: v for k, v in schedule.items() if not _missing(v)}
    mode = None if _missing(mode) else str(mode)
    options: dict[str, Any] = {}
    if "layer_list" in given:
        options["layer_list"] = parse_int_list(given["layer_list"], flag("layer_list"), increasing=True)
    if "image_token_list" in given:
        options["image_token_list"] = parse_int_list(given["image_token_list"], flag("image_token_list"))
    if "visual_token_num" in given:
        count = _number(given["visual_token_num"], flag("visual_token_num"), int)
        if count < 1:
            raise ValueError(f"{flag('visual_token_num')} must be >= 1, got {count}")
        if mode == "wo_ve":
            raise ValueError(
                f"{flag('visual_token_num')} sets the encoder stage, which {flag('mode')} wo_ve turns off"
            )
        options["visual_token_num"] = count
    if "image_token_ratio" in given:
        ratio = _number(given["image_token_ratio"], flag("image_token_ratio"), float)
        if not 0 < ratio <= 1:
            raise ValueError(f"{flag('image_token_ratio')} must lie in (0, 1], got {ratio}")
        if mode == "wo_ve":
            raise ValueError(
                f"{flag('image_token_ratio')} sets the encoder stage, which {flag('mode')} wo_ve turns off"
            )
        options["image_token_ratio"] = ratio
    if "image_token_ratio_list" in given:
        if "image_token_list" in given:
            raise ValueError(f"give {flag('image_token_list')} or {flag('image_token_ratio_list')}, not both")
        options["image_token_ratio_list"] = parse_ratio_list(
            given["image_token_ratio_list"], flag("image_token_ratio_list")
        )
        options["image_token_list"] = []
    if as_bool(reference_quirks, flag("reference_quirks")):
        options["reference_quirks"] = True
    budget = None if _missing(budget) else _number(budget, flag("budget"), int)
    if budget is not None and budget < 1:
        raise ValueError(f"{flag('budget')} must be >= 1, got {budget}")
    return MethodRequest(str(method), budget, mode, tuple(options.items()))
