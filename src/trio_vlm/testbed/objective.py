"""The training objective: answer tokens (teacher forcing), a light LM loss on the question, and auxiliary
dense losses that teach the vision side what is where (heads discarded after training)."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlavaForConditionalGeneration

from trio_vlm.testbed.batches import IGNORE, Batch
from trio_vlm.testbed.targets import PATCH_CLASSES, SUMMARY_SIZE


class AuxHeads(nn.Module):
    """Per-patch colour/shape/letter classifier on the projected image tokens, and a scene-contents classifier
    on the [CLS] token of the feature layer (CLIP-like: [CLS] must look at the objects to summarise them)."""

    def __init__(self, llm_width: int, vision_width: int) -> None:
        super().__init__()
        self.patch = nn.Linear(llm_width, sum(PATCH_CLASSES))
        self.summary = nn.Sequential(nn.LayerNorm(vision_width), nn.Linear(vision_width, SUMMARY_SIZE))


def image_prefix(
    model: LlavaForConditionalGeneration, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Run the vision tower, projector and the LM over the prefix; return (image tokens, [CLS], KV cache)."""
    inner = model.model
    vision = inner.vision_tower(batch.pixel_values, output_hidden_states=True)
    selected = vision.hidden_states[model.config.vision_feature_layer]
    image_tokens = inner.multi_modal_projector(selected[:, 1:])
    embeds = inner.get_input_embeddings()(batch.prefix_ids)
    mask = (batch.prefix_ids == model.config.image_token_id)[..., None]
    embeds = embeds.masked_scatter(mask, image_tokens.to(embeds.dtype))
    out = inner.language_model(inputs_embeds=embeds, use_cache=True)
    return image_tokens, selected[:, 0], out.past_key_values


def question_logits(model: LlavaForConditionalGeneration, batch: Batch, cache: object) -> torch.Tensor:
    """(B·Q, T, V) logits of every question row continued from its image's prefix cache."""
    cache.batch_repeat_interleave(batch.questions_per_image)
    language_model = model.model.language_model
    name = "cache" if "cache" in inspect.signature(language_model.forward).parameters else "past_key_values"
    out = language_model(input_ids=batch.inputs, use_cache=True, **{name: cache})
    return model.lm_head(out.last_hidden_state)


def compute_losses(
    model: LlavaForConditionalGeneration, heads: AuxHeads, batch: Batch
) -> dict[str, torch.Tensor]:
    """Losses (``answer``, ``prompt``, ``patch``, ``summary``) and the answer-token accuracy (``accuracy``)."""
    image_tokens, cls, cache = image_prefix(model, batch)
    logits = question_logits(model, batch, cache).float()
    ce = F.cross_entropy(
        logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE, reduction="none"
    ).view_as(batch.targets)
    valid = batch.targets != IGNORE
    answer_pos = batch.is_answer & valid
    first_answer = answer_pos & ~torch.roll(answer_pos, 1, dims=1)  # the answer word, not </s>
    correct = logits.argmax(-1)[first_answer] == batch.targets[first_answer]
    patch_logits = heads.patch(image_tokens).split(PATCH_CLASSES, dim=-1)
    patch = sum(
        F.cross_entropy(part.flatten(0, 1), batch.patch_labels[..., i].flatten())
        for i, part in enumerate(patch_logits)
    )
    summary = F.binary_cross_entropy_with_logits(heads.summary(cls), batch.summary)
    return {
        "answer": ce[answer_pos].mean(),
        "prompt": ce[valid & ~batch.is_answer].mean(),
        "patch": patch,
        "summary": summary,
        "accuracy": correct.float().mean().detach(),
    }
