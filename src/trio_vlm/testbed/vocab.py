"""The testbed's word-level tokenizer and its stock ``LlavaProcessor`` (336 px, patch 14, 576 image tokens)."""

from __future__ import annotations

from transformers import CLIPImageProcessorPil, LlavaProcessor, PreTrainedTokenizerFast

from trio_vlm.bundled import word_level_tokenizer
from trio_vlm.testbed.questions import PLURALS, answer_words
from trio_vlm.testbed.scene import GRID, PATCH

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<image>", "<unk>")
IMAGE_TOKEN_ID = 3
# The vicuna_v1 system sentence and the prompt frame, lower-cased and split as the tokenizer splits them.
_PROMPT_WORDS = [
    "a",
    "chat",
    "between",
    "curious",
    "human",
    "and",
    "an",
    "artificial",
    "intelligence",
    "assistant",
    ".",
    "the",
    "gives",
    "helpful",
    ",",
    "detailed",
    "polite",
    "answers",
    "to",
    "'",
    "s",
    "questions",
    "user",
    ":",
    "?",
]
_QUESTION_WORDS = [
    "is",
    "there",
    "in",
    "image",
    "what",
    "shape",
    "object",
    "colour",
    "how",
    "many",
    "are",
    "letter",
    "on",
    "white",
    "tile",
    "left",
    "or",
    "right",
    "at",
    "top",
    "bottom",
]


def vocabulary() -> dict[str, int]:
    """Token → id: special tokens at 0-4, then prompt, question and answer words (each once, in order)."""
    words: list[str] = list(SPECIAL_TOKENS)
    for word in (*_PROMPT_WORDS, *_QUESTION_WORDS, *PLURALS.values(), *answer_words()):
        if word not in words:
            words.append(word)
    return {word: i for i, word in enumerate(words)}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Lower-casing word-level tokenizer over :func:`vocabulary` (left padding for batched generation)."""
    return word_level_tokenizer(vocabulary(), padding_side="left")


def build_processor() -> LlavaProcessor:
    """LLaVA-1.5 geometry: 336×336 input, 14 px patches, ``<image>`` expanded to 576 tokens (+[CLS] dropped)."""
    side = GRID * PATCH
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
