"""Methods by name: the registry is built from the classes (``name`` and ``table_order`` are class attributes).

Adding a method: one file with its dataclass, one line in :data:`METHODS` (or :func:`register` from outside
the package), one cell in the method test table — see docs/adding_a_method.md.
"""

from __future__ import annotations

from trio_vlm.methods.base import TokenMethod
from trio_vlm.methods.dart import DART
from trio_vlm.methods.fastv import FastV
from trio_vlm.methods.fixed import Vanilla
from trio_vlm.methods.holov import HoloV
from trio_vlm.methods.pdrop import PDrop
from trio_vlm.methods.sanity import Random, Uniform
from trio_vlm.methods.scope import SCOPE
from trio_vlm.methods.sparsevlm import SparseVLM
from trio_vlm.methods.trio import TRIO
from trio_vlm.methods.visionzip import VisionZip

METHODS: tuple[type[TokenMethod], ...] = (
    Vanilla,
    TRIO,
    FastV,
    PDrop,
    SparseVLM,
    DART,
    VisionZip,
    HoloV,
    SCOPE,
    Random,
    Uniform,
)
_REGISTRY: dict[str, type[TokenMethod]] = {cls.name: cls for cls in METHODS}


def register(cls: type[TokenMethod]) -> type[TokenMethod]:
    """Make ``cls`` selectable by its ``name`` everywhere (API, CLI, eval, lmms-eval); usable as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, TokenMethod)):
        raise TypeError(f"only TokenMethod subclasses can be registered, got {cls!r}")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered ({existing.__qualname__})")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a method registered with :func:`register` (built-in methods cannot be removed)."""
    if any(cls.name == name for cls in METHODS):
        raise ValueError(f"{name!r} is a built-in method")
    _REGISTRY.pop(name, None)


def method_class(name: str) -> type[TokenMethod]:
    """The method class registered as ``name`` (case-insensitive)."""
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return _REGISTRY[key]


def available_methods(include_vanilla: bool = True) -> list[str]:
    """Registered names in table order (vanilla first)."""
    names = [cls.name for cls in sorted(_REGISTRY.values(), key=lambda c: (c.table_order, c.name))]
    return names if include_vanilla else [n for n in names if n != Vanilla.name]


def build_method(
    name: str,
    model: object = "llava-1.5",
    budget: int | None = None,
    mode: str | None = None,
    **overrides: object,
) -> TokenMethod:
    """``method_class(name).preset(model, budget, mode, **overrides)`` — the one way every entry point builds a
    method (``model``: a family name, a shape, a config or a loaded model; vanilla ignores the budget)."""
    cls = method_class(name)
    if cls is Vanilla:
        return Vanilla.preset(model, mode=mode, **overrides)
    return cls.preset(model, 64 if budget is None else budget, mode, **overrides)
