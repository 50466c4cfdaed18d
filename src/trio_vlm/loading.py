"""Load a supported VLM and its processor, build LLaVA-1.5 prompts and read images."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration, ProcessorMixin

logger = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("LlavaForConditionalGeneration",)
_SUPPORTED_MODEL_TYPES = ("llava",)
_VICUNA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
# LLaVA's conv_vicuna_v1 (what model_vqa_loader uses): system sentence, then "USER: ... ASSISTANT:".
_LLAVA_V1_TEMPLATE = _VICUNA_SYSTEM + " USER: <image>\n{question} ASSISTANT:"
# The llava-hf model cards' shorter prompt, without the system sentence.
_LLAVA_HF_TEMPLATE = "USER: <image>\n{question} ASSISTANT:"
CONV_TEMPLATES = {
    "vicuna_v1": _LLAVA_V1_TEMPLATE,
    "llava_v1": _LLAVA_V1_TEMPLATE,
    "llava_hf": _LLAVA_HF_TEMPLATE,
}
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


def check_architecture(model_id_or_path: str | os.PathLike[str], trust_remote_code: bool = False) -> None:
    """Raise ``ValueError`` unless the checkpoint's config declares a supported architecture."""
    config = AutoConfig.from_pretrained(model_id_or_path, trust_remote_code=trust_remote_code)
    architectures = list(getattr(config, "architectures", None) or [])
    if any(arch in SUPPORTED_ARCHITECTURES for arch in architectures):
        return
    if not architectures and config.model_type in _SUPPORTED_MODEL_TYPES:
        return
    found = ", ".join(architectures) or f"model_type={config.model_type!r}"
    raise ValueError(
        f"unsupported model architecture {found}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
    )


def load_model_and_processor(
    model_id_or_path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[LlavaForConditionalGeneration, ProcessorMixin]:
    """Load a LLaVA checkpoint (hub id or local path) in eval mode on ``device``, with its processor."""
    check_architecture(model_id_or_path, trust_remote_code=trust_remote_code)
    kwargs: dict[str, object] = {"dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = LlavaForConditionalGeneration.from_pretrained(model_id_or_path, **kwargs)
    model = model.to(device).eval()
    processor = AutoProcessor.from_pretrained(model_id_or_path, trust_remote_code=trust_remote_code)
    logger.info("loaded %s (%s) on %s", model_id_or_path, model.dtype, model.device)
    return model, processor


def prompt_for(question: str, conv_mode: str = "vicuna_v1") -> str:
    """The LLaVA-1.5 single-turn prompt for ``question`` (``vicuna_v1``: system sentence +
    ``"USER: <image>\\n{question} ASSISTANT:"``; ``llava_hf``: without the system sentence)."""
    try:
        template = CONV_TEMPLATES[conv_mode]
    except KeyError:
        raise ValueError(
            f"unknown conv mode {conv_mode!r}; supported: {', '.join(sorted(CONV_TEMPLATES))}"
        ) from None
    return template.format(question=question)


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open ``path`` as an RGB image; ``FileNotFoundError`` names the missing file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    with Image.open(path) as image:
        return image.convert("RGB")
