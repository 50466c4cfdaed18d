"""Offline assets for the tiny models: a word-level processor, a cached tiny checkpoint and an example image.

Nothing here downloads anything: the tokenizer is built from a fixed word list, the image processor from its
class defaults, and the model from :func:`trio_vlm.testing.tiny.tiny_llava`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPImageProcessorPil, LlavaProcessor, PreTrainedTokenizerFast

from trio_vlm.testing.tiny import IMAGE_TOKEN_ID, tiny_llava

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<image>", "<unk>")
# Lower-case words (the tokenizer lower-cases its input); ids follow SPECIAL_TOKENS in this order.
WORDS = (
    "user", "assistant", ":", "?", ".", ",", "!", "'", "-",
    "what", "which", "where", "who", "how", "many", "is", "are", "there", "this", "that", "it",
    "the", "a", "an", "of", "in", "on", "at", "to", "and", "or", "with", "do", "does", "you", "see",
    "image", "picture", "photo", "shown", "object", "objects", "colour", "color", "shape", "number",
    "left", "right", "top", "bottom", "above", "below", "next", "side", "big", "small", "large",
    "red", "green", "blue", "yellow", "black", "white", "orange", "purple",
    "circle", "square", "triangle", "pentagon", "star",
    "one", "two", "three", "four", "five", "yes", "no",
    "answer", "question", "using", "single", "word", "phrase", "describe",
)  # fmt: skip
CACHE_ENV_VAR = "TRIO_VLM_CACHE"
TINY_CHECKPOINT_NAME = "tiny-llava-v1"


def tiny_vocab() -> dict[str, int]:
    """The word-level vocabulary: special tokens at ids 0-4, then :data:`WORDS`."""
    tokens = list(SPECIAL_TOKENS) + list(WORDS)
    if len(set(tokens)) != len(tokens):
        raise AssertionError("duplicate entries in the tiny vocabulary")
    return {token: i for i, token in enumerate(tokens)}


def word_level_tokenizer(
    vocab: dict[str, int],
    padding_side: str = "right",
    *,
    named_tokens: dict[str, str] | None = None,
    control_tokens: tuple[str, ...] = (),
    add_bos: bool = True,
) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over ``vocab`` that splits punctuation off and prepends ``<s>``
    (unless ``add_bos`` is false). ``named_tokens`` (default ``{"image_token": "<image>"}``) are the
    processor's named special tokens, ``control_tokens`` further special tokens kept whole (chat markers);
    the image token must have id :data:`IMAGE_TOKEN_ID`."""
    named = {"image_token": "<image>"} if named_tokens is None else named_tokens
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
        )
    if control_tokens:
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control_tokens])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=named,
        model_max_length=4096,
        padding_side=padding_side,
    )
    if tokenizer.convert_tokens_to_ids(named["image_token"]) != IMAGE_TOKEN_ID:
        raise AssertionError(f"the image token id must be {IMAGE_TOKEN_ID}")
    return tokenizer


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The tokenizer of the bundled tiny model: ids fit ``tiny_llava``'s vocabulary of 96."""
    return word_level_tokenizer(tiny_vocab())


def build_tiny_processor(
    image_size: int = 24, patch_size: int = 2, chat_template: str | None = None
) -> LlavaProcessor:
    """A stock ``LlavaProcessor`` that expands ``<image>`` to ``(image_size // patch_size) ** 2`` tokens
    (with ``chat_template`` if given)."""
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tiny_tokenizer(),
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLIP [CLS] token, dropped again by the "default" strategy
        chat_template=chat_template,
    )


def save_tiny_checkpoint(
    path: str | os.PathLike[str], seed: int = 0, chat_template: str | None = None
) -> Path:
    """Save ``tiny_llava(seed)`` and its processor (with ``chat_template`` if given) to ``path``
    (safetensors); return the path."""
    path = Path(path)
    model = tiny_llava(seed)
    vision = model.config.vision_config
    processor = build_tiny_processor(vision.image_size, vision.patch_size, chat_template)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    logger.info("saved tiny LLaVA checkpoint (seed %d) to %s", seed, path)
    return path


def cache_root() -> Path:
    """``$TRIO_VLM_CACHE`` if set, else ``~/.cache/trio-vlm``."""
    override = os.environ.get(CACHE_ENV_VAR)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "trio-vlm"


def default_model_dir() -> Path:
    """The bundled tiny checkpoint, built into :func:`cache_root` on first use (atomically) and reused after."""
    target = cache_root() / TINY_CHECKPOINT_NAME
    if (target / "config.json").is_file() and (target / "processor_config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{TINY_CHECKPOINT_NAME}-", dir=target.parent))
    try:
        save_tiny_checkpoint(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent builder winning the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built the bundled tiny checkpoint at %s", target)
    return target


def bundled_image_path() -> Path:
    """A 336x336 PNG of four coloured shapes shipped with the package."""
    return Path(str(resources.files("trio_vlm") / "assets" / "example.png"))
