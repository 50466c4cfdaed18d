"""Prompt formats: LLaVA's conversation templates and the processor's chat template, and each family's default."""

from __future__ import annotations

from typing import Any

#: conv mode that formats the prompt with the processor's own chat template (Qwen2.5-VL's reference format).
CHAT_TEMPLATE = "chat_template"
QWEN_IMAGE_PAD = "<|image_pad|>"
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
CONV_MODES = (*CONV_TEMPLATES, CHAT_TEMPLATE)
#: The prompt format of the paper's evaluation per family (EVAL.md): LLaVA's ``vicuna_v1`` for LLaVA-1.5 and
#: LLaVA-NeXT(-7B, Vicuna), the model's chat template for Qwen2.5-VL.
FAMILY_CONV_MODES = {"llava-1.5": "vicuna_v1", "llava-next": "vicuna_v1", "qwen2.5-vl": CHAT_TEMPLATE}


def check_conv_mode(conv_mode: str) -> str:
    """``conv_mode`` if known (``"auto"`` included), else ``ValueError`` listing the known ones."""
    if conv_mode != "auto" and conv_mode not in CONV_MODES:
        raise ValueError(f"unknown conv mode {conv_mode!r}; supported: auto, {', '.join(CONV_MODES)}")
    return conv_mode


def resolve_conv_mode(conv_mode: str, family: str) -> str:
    """``"auto"`` becomes the family's default; anything else is checked and returned."""
    check_conv_mode(conv_mode)
    return FAMILY_CONV_MODES[family] if conv_mode == "auto" else conv_mode


def prompt_for(question: str, conv_mode: str = "vicuna_v1", processor: Any = None, image: bool = True) -> str:
    """The single-turn prompt for ``question`` about one image (``image=False``: a text-only question).

    ``vicuna_v1``: LLaVA-1.5's system sentence + ``"USER: <image>\\n{question} ASSISTANT:"``; ``llava_hf``:
    without the system sentence (``<image>`` stands for the processor's :func:`image_placeholder`);
    ``chat_template``: the ``processor``'s own chat template with one image and the generation prompt.
    """
    if conv_mode == CHAT_TEMPLATE:
        return chat_prompt(processor, question, image)
    try:
        template = CONV_TEMPLATES[conv_mode]
    except KeyError:
        raise ValueError(f"unknown conv mode {conv_mode!r}; supported: {', '.join(CONV_MODES)}") from None
    prompt = template.format(question=question)
    if not image:
        return prompt.replace("<image>\n", "", 1)
    return prompt.replace("<image>", image_placeholder(processor), 1)


def image_placeholder(processor: Any = None) -> str:
    """The text that stands for one image in a LLaVA-template prompt: ``<image>`` (LLaVA-1.5, LLaVA-NeXT), or
    Qwen2.5-VL's ``<|vision_start|><|image_pad|><|vision_end|>`` when ``processor`` expands ``<|image_pad|>``."""
    if getattr(processor, "image_token", None) == QWEN_IMAGE_PAD:
        return f"<|vision_start|>{QWEN_IMAGE_PAD}<|vision_end|>"
    return "<image>"


def chat_prompt(processor: Any, question: str, image: bool = True) -> str:
    """``question`` (about one image) formatted by the processor's chat template, with the generation prompt."""
    if processor is None or not getattr(processor, "chat_template", None):
        raise ValueError("conv mode 'chat_template' needs a processor that has a chat template")
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
