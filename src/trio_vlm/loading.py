"""Load a supported VLM (LLaVA-1.5, LLaVA-NeXT, Qwen2.5-VL) and its processor, build prompts and read images."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoProcessor,
    LlavaForConditionalGeneration,
    LlavaNextForConditionalGeneration,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2_5_VLForConditionalGeneration,
)

logger = logging.getLogger(__name__)

#: Architecture name (config ``architectures``) -> model class; the pruning adapter follows from the class.
MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "LlavaForConditionalGeneration": LlavaForConditionalGeneration,
    "LlavaNextForConditionalGeneration": LlavaNextForConditionalGeneration,
    "Qwen2_5_VLForConditionalGeneration": Qwen2_5_VLForConditionalGeneration,
}
SUPPORTED_ARCHITECTURES = tuple(MODEL_CLASSES)
_MODEL_TYPES = {
    "llava": "LlavaForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
}
_SUPPORTED_MODEL_TYPES = tuple(_MODEL_TYPES)
#: conv mode that formats the prompt with the processor's own chat template (Qwen2.5-VL, llava-hf NeXT).
CHAT_TEMPLATE = "chat_template"
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


def check_architecture(model_id_or_path: str | os.PathLike[str], trust_remote_code: bool = False) -> str:
    """The checkpoint's supported architecture name; ``ValueError`` naming it if it is not supported."""
    config = AutoConfig.from_pretrained(model_id_or_path, trust_remote_code=trust_remote_code)
    architectures = list(getattr(config, "architectures", None) or [])
    for arch in architectures:
        if arch in MODEL_CLASSES:
            return arch
    if not architectures and config.model_type in _MODEL_TYPES:
        return _MODEL_TYPES[config.model_type]
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
    device_map: str | dict[str, str | int] | None = None,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load a supported checkpoint (hub id or local path) in eval mode on ``device`` (or spread by
    ``device_map``), with its processor; the model class follows the config's architecture."""
    architecture = check_architecture(model_id_or_path, trust_remote_code=trust_remote_code)
    kwargs: dict[str, object] = {"dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = MODEL_CLASSES[architecture].from_pretrained(model_id_or_path, **kwargs)
    model = (model if device_map is not None else model.to(device)).eval()
    processor = AutoProcessor.from_pretrained(model_id_or_path, trust_remote_code=trust_remote_code)
    logger.info("loaded %s (%s) on %s", model_id_or_path, model.dtype, model.device)
    return model, processor


def prompt_for(question: str, conv_mode: str = "vicuna_v1", processor: ProcessorMixin | None = None) -> str:
    """The single-turn prompt for ``question`` about one image.

    ``vicuna_v1``: LLaVA-1.5's system sentence + ``"USER: <image>\\n{question} ASSISTANT:"``; ``llava_hf``:
    without the system sentence; ``chat_template``: the ``processor``'s own chat template with one image and
    the generation prompt (Qwen2.5-VL's reference format).
    """
    if conv_mode == CHAT_TEMPLATE:
        return chat_prompt(processor, question)
    try:
        template = CONV_TEMPLATES[conv_mode]
    except KeyError:
        raise ValueError(
            f"unknown conv mode {conv_mode!r}; supported: {', '.join(sorted(CONV_TEMPLATES))}"
        ) from None
    return template.format(question=question)


def chat_prompt(processor: ProcessorMixin | None, question: str) -> str:
    """``question`` about one image formatted by the processor's chat template, with the generation prompt."""
    if processor is None or not getattr(processor, "chat_template", None):
        raise ValueError("conv mode 'chat_template' needs a processor that has a chat template")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def default_conv_mode(model: PreTrainedModel) -> str:
    """The prompt format a family's reference evaluation uses: LLaVA's ``vicuna_v1``, or the chat template."""
    return "vicuna_v1" if isinstance(model, LlavaForConditionalGeneration) else CHAT_TEMPLATE


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open ``path`` as an RGB image; ``FileNotFoundError`` names the missing file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    with Image.open(path) as image:
        return image.convert("RGB")
