"""Methods selectable by name (API and CLI)."""

from __future__ import annotations

import importlib

from trio_vlm.methods.base import TokenMethod

# name -> "module:Class"; imported on first use so optional pieces cost nothing until asked for.
METHODS: dict[str, str] = {
    "trio": "trio_vlm.methods.trio:TRIO",
    "fastv": "trio_vlm.methods.fastv:FastV",
    "pdrop": "trio_vlm.methods.pdrop:PDrop",
    "sparsevlm": "trio_vlm.methods.sparsevlm:SparseVLM",
    "dart": "trio_vlm.methods.dart:DART",
    "random": "trio_vlm.methods.sanity:Random",
    "uniform": "trio_vlm.methods.sanity:Uniform",
    "visionzip": "trio_vlm.methods.visionzip:VisionZip",
    "holov": "trio_vlm.methods.holov:HoloV",
    "scope": "trio_vlm.methods.scope:SCOPE",
    "vanilla": "trio_vlm.methods.fixed:Vanilla",
}


def method_class(name: str) -> type[TokenMethod]:
    """The method class registered as ``name`` (case-insensitive)."""
    key = name.lower()
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    module, cls = METHODS[key].split(":")
    return getattr(importlib.import_module(module), cls)


def available_methods() -> list[str]:
    return sorted(METHODS)
