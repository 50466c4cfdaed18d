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
    return image_tokens, selected[:, 0], out.past_key_values, vision.hidden_states


def cls_attention_loss(
    model: LlavaForConditionalGeneration,
    hidden_states: tuple[torch.Tensor, ...],
    layers: tuple[int, ...],
    objects: torch.Tensor,
) -> torch.Tensor:
    """−log of the head-averaged [CLS]→patch attention mass on object patches (``objects`` (B, N) bool) in
    the given vision layers, recomputed from each layer's input as CLIP computes it."""
    tower = model.model.vision_tower
    encoder_layers = getattr(tower, "vision_model", tower).encoder.layers
    losses = []
    for index in layers:
        layer = encoder_layers[index]
        attn = layer.self_attn
        h = layer.layer_norm1(hidden_states[index])
        n_img, length, _ = h.shape
        q = attn.q_proj(h[:, :1]).view(n_img, 1, attn.num_heads, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(n_img, length, attn.num_heads, attn.head_dim).transpose(1, 2)
        probs = (q @ k.transpose(-1, -2) * attn.scale).float().softmax(-1)[:, :, 0, 1:]
        mass = (probs * objects[:, None, :]).sum(-1).mean(1)
        losses.append(-torch.log(mass + 1e-6).mean())
    return torch.stack(losses).mean()


def question_logits(
    model: LlavaForConditionalGeneration,
    batch: Batch,
    cache: object,
    capture: tuple[int, ...] = (),
) -> tuple[torch.Tensor, dict[int, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]]]:
    """(B·Q, T, V) logits of every question row continued from its image's prefix cache, and for each layer in
    ``capture`` the (normed input, (cos, sin)) its attention saw for the question tokens."""
    cache.batch_repeat_interleave(batch.questions_per_image)
    language_model = model.model.language_model
    name = "cache" if "cache" in inspect.signature(language_model.forward).parameters else "past_key_values"
    seen: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = {}

    def hook(index: int):
        def grab(module, args, kwargs):
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            seen[index] = (hidden, kwargs["position_embeddings"])

        return grab

    handles = [
        language_model.layers[i].self_attn.register_forward_pre_hook(hook(i), with_kwargs=True)
        for i in capture
    ]
    try:
        out = language_model(input_ids=batch.inputs, use_cache=True, **{name: cache})
    finally:
        for handle in handles:
            handle.remove()
    return model.lm_head(out.last_hidden_state), seen


def evidence_attention_loss(
    model: LlavaForConditionalGeneration,
    batch: Batch,
    cache: object,
    seen: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]],
) -> torch.Tensor:
    """−log of the head-averaged attention mass the answer position (the final ``:``) puts on the asked
    object's patches, averaged over the captured layers and the questions that have evidence."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    prefix_len = batch.prefix_ids.shape[1]
    image_start = int((batch.prefix_ids[0] == model.config.image_token_id).nonzero()[0])
    valid = batch.targets != IGNORE
    answer_row = valid.sum(1) - 2  # index of the last prompt token in each question row
    rows = torch.arange(batch.inputs.shape[0])
    has_evidence = batch.evidence.any(1)
    losses = []
    for index, (hidden, (cos, sin)) in seen.items():
        attn = model.model.language_model.layers[index].self_attn
        n_rows, length, _ = hidden.shape
        q = attn.q_proj(hidden).view(n_rows, length, -1, attn.head_dim).transpose(1, 2)
        q, _ = apply_rotary_pos_emb(q, q, cos, sin)
        q = q[rows, :, answer_row]  # (B·Q, H, d)
        keys = cache.layers[index].keys  # (B·Q, KV, P + T, d), rotary applied
        keys = keys.repeat_interleave(q.shape[1] // keys.shape[1], dim=1)
        scores = torch.einsum("rhd,rhkd->rhk", q, keys) * attn.scaling
        positions = torch.arange(keys.shape[2])
        scores = scores.masked_fill(positions[None, None, :] > (prefix_len + answer_row)[:, None, None], -1e9)
        probs = scores.float().softmax(-1)[..., image_start : image_start + batch.evidence.shape[1]]
        mass = (probs * batch.evidence[:, None, :]).sum(-1).mean(1)
        losses.append(-torch.log(mass[has_evidence] + 1e-6).mean())
    return torch.stack(losses).mean()


def grounding_attention_loss(
    model: LlavaForConditionalGeneration,
    batch: Batch,
    cache: object,
    seen: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]],
) -> torch.Tensor:
    """−log of the head-averaged attention mass each grounded question word (a colour, shape, "tile", …)
    puts on the patches of what it names, averaged over the captured layers and grounded words."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    prefix_len = batch.prefix_ids.shape[1]
    image_start = int((batch.prefix_ids[0] == model.config.image_token_id).nonzero()[0])
    grounded = batch.grounding.any(-1)  # (B·Q, T)
    losses = []
    for index, (hidden, (cos, sin)) in seen.items():
        attn = model.model.language_model.layers[index].self_attn
        n_rows, length, _ = hidden.shape
        q = attn.q_proj(hidden).view(n_rows, length, -1, attn.head_dim).transpose(1, 2)
        q, _ = apply_rotary_pos_emb(q, q, cos, sin)  # (B·Q, H, T, d)
        keys = cache.layers[index].keys
        keys = keys.repeat_interleave(q.shape[1] // keys.shape[1], dim=1)
        scores = (q @ keys.transpose(-1, -2)) * attn.scaling  # (B·Q, H, T, P + T)
        key_pos = torch.arange(keys.shape[2])
        query_pos = prefix_len + torch.arange(length)
        scores = scores.masked_fill(key_pos[None, :] > query_pos[:, None], -1e9)
        probs = scores.float().softmax(-1)[..., image_start : image_start + batch.grounding.shape[-1]]
        mass = (probs * batch.grounding[:, None]).sum(-1).mean(1)  # (B·Q, T)
        losses.append(-torch.log(mass[grounded] + 1e-6).mean())
    return torch.stack(losses).mean()


def compute_losses(
    model: LlavaForConditionalGeneration,
    heads: AuxHeads,
    batch: Batch,
    attention_layers: tuple[int, ...] = (),
    cls_layers: tuple[int, ...] = (),
    grounding_layers: tuple[int, ...] = (),
) -> dict[str, torch.Tensor]:
    """Losses (``answer``, ``prompt``, ``patch``, ``summary``, ``evidence`` when ``attention_layers`` are
    given) and the answer-token accuracy (``accuracy``)."""
    image_tokens, cls, cache, vision_states = image_prefix(model, batch)
    logits, seen = question_logits(model, batch, cache, tuple(sorted({*attention_layers, *grounding_layers})))
    logits = logits.float()
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
    extra = {}
    if attention_layers:
        picked = {i: seen[i] for i in attention_layers}
        extra["evidence"] = evidence_attention_loss(model, batch, cache, picked)
    if grounding_layers:
        extra["grounding"] = grounding_attention_loss(
            model, batch, cache, {i: seen[i] for i in grounding_layers}
        )
    if cls_layers:
        objects = batch.patch_labels[..., 0] > 0
        extra["cls_attention"] = cls_attention_loss(model, vision_states, cls_layers, objects)
    return {
        **extra,
        "answer": ce[answer_pos].mean(),
        "prompt": ce[valid & ~batch.is_answer].mean(),
        "patch": patch,
        "summary": summary,
        "accuracy": correct.float().mean().detach(),
    }
