"""The one loader: a supported VLM (LLaVA-1.5, LLaVA-NeXT, Qwen2.5-VL) and its processor, by architecture.

Every entry point loads through :func:`load_model_and_processor` — hub id or local folder, one device or spread
by ``device_map`` (accelerate), ``trust_remote_code`` off unless asked. The model class follows the checkpoint's
``config.architectures`` (:data:`trio_vlm.presets.ARCHITECTURES`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
import transformers
from PIL import Image, UnidentifiedImageError
from transformers import AutoConfig, PreTrainedModel, ProcessorMixin

from trio_vlm.presets import ARCHITECTURES, ModelShape, family_of_config, shape_of_config
from trio_vlm.processors import load_processor

logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype) -> str | torch.dtype:
    """``"auto"`` (the checkpoint's dtype), a ``torch.dtype``, or a name such as ``"bfloat16"``."""
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected 'auto' or one of {sorted(_DTYPES)}") from None


def checkpoint_source(model_id_or_path: str | os.PathLike[str]) -> str | Path:
    """A local folder (as a ``Path``) or a hub id (as given). A path that cannot be a hub id and does not exist,
    or a folder without ``config.json``, is reported as ``FileNotFoundError`` naming it."""
    text = os.fspath(model_id_or_path)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").is_file():
            raise FileNotFoundError(f"{text} has no config.json: it is not a saved checkpoint folder")
        return path
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", text):
        return text
    raise FileNotFoundError(f"model folder not found: {text}")


def load_config(model_id_or_path: str | os.PathLike[str], trust_remote_code: bool = False) -> Any:
    """The checkpoint's config (hub id or local folder)."""
    return AutoConfig.from_pretrained(
        checkpoint_source(model_id_or_path), trust_remote_code=trust_remote_code
    )


def check_architecture(model_id_or_path: str | os.PathLike[str], trust_remote_code: bool = False) -> str:
    """The checkpoint's supported architecture name; ``ValueError`` naming it if it is not supported."""
    family = family_of_config(load_config(model_id_or_path, trust_remote_code))
    return next(arch for arch, fam in ARCHITECTURES.items() if fam == family)


def model_shape(model_id_or_path: str | os.PathLike[str]) -> ModelShape:
    """The :class:`~trio_vlm.presets.ModelShape` of a checkpoint, from its config (no weights loaded)."""
    return shape_of_config(load_config(model_id_or_path))


def load_model_and_processor(
    model_id_or_path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    device_map: str | dict[str, str | int] | None = None,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load a supported checkpoint in eval mode on ``device`` (or spread by ``device_map``, e.g. ``"auto"``),
    with its processor (:func:`trio_vlm.processors.load_processor`); the model class follows the config's
    architecture."""
    architecture = check_architecture(model_id_or_path, trust_remote_code=trust_remote_code)
    family = ARCHITECTURES[architecture]
    source = checkpoint_source(model_id_or_path)
    kwargs: dict[str, object] = {"dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    model_class = getattr(transformers, architecture)
    try:
        model = model_class.from_pretrained(source, **kwargs)
    except ImportError as exc:
        if device_map is not None:
            raise ImportError(
                f"--device-map {device_map} needs accelerate: pip install accelerate ({exc})"
            ) from exc
        raise
    model = (model if device_map is not None else model.to(device)).eval()
    processor = load_processor(source, family, trust_remote_code=trust_remote_code)
    logger.info("loaded %s (%s) on %s", model_id_or_path, model.dtype, model.device)
    return model, processor


def model_id(model_id_or_path: str | os.PathLike[str]) -> str:
    """LLaVA's ``model_id`` field: the checkpoint folder's or hub id's last component."""
    return Path(os.fspath(model_id_or_path).rstrip("/")).name


def image_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be read as an image (missing, not a file, not an image, corrupt), or ``None``.

    Checks the file's structure (``PIL.Image.verify``) without decoding every pixel, so a whole benchmark's
    images can be checked before the first answer."""
    path = Path(path)
    if not path.exists():
        return f"image file not found: {path}"
    if not path.is_file():
        return f"image path is not a file: {path}"
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"cannot read image {path}: {exc}"
    return None


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open ``path`` as an RGB image; ``FileNotFoundError`` / ``ValueError`` name a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
