"""The training objectives: answer tokens (teacher forcing), a light LM loss on the question, and auxiliary
dense losses (heads discarded after training) — for the language phase on ideal image tokens, the vision phase
on pixels, and the joint phase on the whole model."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlavaForConditionalGeneration

from trio_vlm.testbed.batches import IGNORE, Batch
from trio_vlm.testbed.codes import patch_codes
from trio_vlm.testbed.targets import NAMED_SIZE, SUMMARY_SIZE, named_targets


class AuxHeads(nn.Module):
    """A probe on the question words' hidden states (what the named items look like, where, how many) and a
    scene-contents classifier on the [CLS] token of the feature layer (CLIP-like: [CLS] must look at the
    objects to summarise them)."""

    def __init__(self, llm_width: int, vision_width: int) -> None:
        super().__init__()
        self.named = nn.Linear(llm_width, NAMED_SIZE)
        self.summary = nn.Sequential(nn.LayerNorm(vision_width), nn.Linear(vision_width, SUMMARY_SIZE))


@dataclass(frozen=True)
class LossLayers:
    """Which layers the auxiliary losses read (empty: loss off)."""

    grounding: tuple[int, ...] = (0, 1)  # question words → the patches they name
    readout: tuple[int, ...] = (2, 3)  # answer position → the question words that name objects
    probe: int | None = 2  # question words' hidden state after this layer feeds the ``named`` probe
    cls: tuple[int, ...] = (5, 6)  # vision [CLS] → object patches


def image_prefix(
    model: LlavaForConditionalGeneration, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, object, tuple[torch.Tensor, ...]]:
    """Run the vision tower, projector and the LM over the prefix; return (image tokens, [CLS], KV cache,
    vision hidden states)."""
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


@dataclass
class QuestionPass:
    """Question rows continued from their image's prefix cache: ``logits`` (B·Q, T, V); for each captured
    layer the (normed input, (cos, sin)) its attention saw; the hidden state after the probe layer."""

    logits: torch.Tensor
    seen: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]]
    probe: torch.Tensor | None = None


def question_logits(
    model: LlavaForConditionalGeneration,
    batch: Batch,
    cache: object,
    capture: tuple[int, ...] = (),
    position_start: int | None = None,
    probe_layer: int | None = None,
) -> QuestionPass:
    """Continue every question row from its image's prefix ``cache``. Positions start at ``position_start``
    (default: the cache length; the full prefix length when the cache holds only some image tokens)."""
    cache.batch_repeat_interleave(batch.questions_per_image)
    language_model = model.model.language_model
    name = "cache" if "cache" in inspect.signature(language_model.forward).parameters else "past_key_values"
    seen: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = {}
    probe: list[torch.Tensor] = []

    def hook(index: int):
        def grab(module, args, kwargs):
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            seen[index] = (hidden, kwargs["position_embeddings"])

        return grab

    handles = [
        language_model.layers[i].self_attn.register_forward_pre_hook(hook(i), with_kwargs=True)
        for i in capture
    ]
    if probe_layer is not None:
        handles.append(
            language_model.layers[probe_layer].register_forward_hook(
                lambda module, args, out: probe.append(out[0] if isinstance(out, tuple) else out)
            )
        )
    start = cache.get_seq_length() if position_start is None else position_start
    positions = start + torch.arange(batch.inputs.shape[1], device=batch.inputs.device)
    try:
        out = language_model(
            input_ids=batch.inputs,
            position_ids=positions.expand(batch.inputs.shape[0], -1),
            use_cache=True,
            **{name: cache},
        )
    finally:
        for handle in handles:
            handle.remove()
    return QuestionPass(model.lm_head(out.last_hidden_state), seen, probe[0] if probe else None)


def _queries_and_keys(
    model: LlavaForConditionalGeneration,
    index: int,
    inputs: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]],
    cache: object,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Decoder layer ``index``'s rotary queries for the question rows (B·Q, H, T, d), from the (normed input,
    (cos, sin)) its attention saw, its cached keys repeated to every query head (B·Q, H, P + T, d), and its
    score scaling."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    hidden, (cos, sin) = inputs
    attn = model.model.language_model.layers[index].self_attn
    n_rows, length, _ = hidden.shape
    q = attn.q_proj(hidden).view(n_rows, length, -1, attn.head_dim).transpose(1, 2)
    q, _ = apply_rotary_pos_emb(q, q, cos, sin)
    keys = cache.layers[index].keys  # rotary already applied
    return q, keys.repeat_interleave(q.shape[1] // keys.shape[1], dim=1), attn.scaling


def grounding_attention_loss(
    model: LlavaForConditionalGeneration,
    batch: Batch,
    cache: object,
    seen: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]],
) -> torch.Tensor:
    """−log of the head-averaged attention mass each grounded question word (a colour, shape, "tile", …)
    puts on the patches of what it names, averaged over the captured layers and grounded words."""
    prefix_len = batch.prefix_ids.shape[1]
    image_start = int((batch.prefix_ids[0] == model.config.image_token_id).nonzero()[0])
    grounded = batch.grounding.any(-1)  # (B·Q, T)
    losses = []
    for index, inputs in seen.items():
        q, keys, scaling = _queries_and_keys(model, index, inputs, cache)
        length = q.shape[2]
        scores = (q @ keys.transpose(-1, -2)) * scaling  # (B·Q, H, T, P + T)
        key_pos = torch.arange(keys.shape[2], device=scores.device)
        query_pos = prefix_len + torch.arange(length, device=scores.device)
        scores = scores.masked_fill(key_pos[None, :] > query_pos[:, None], -1e9)
        probs = scores.float().softmax(-1)[..., image_start : image_start + batch.grounding.shape[-1]]
        mass = (probs * batch.grounding[:, None]).sum(-1).mean(1)  # (B·Q, T)
        losses.append(-torch.log(mass[grounded] + 1e-6).mean())
    return torch.stack(losses).mean()


def _answer_rows(batch: Batch) -> torch.Tensor:
    """Index of the last prompt token (the final ``:``, which predicts the answer) in each question row."""
    return (batch.targets != IGNORE).sum(1) - 2


def readout_attention_loss(
    model: LlavaForConditionalGeneration,
    batch: Batch,
    cache: object,
    seen: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]],
) -> torch.Tensor:
    """−log of the head-averaged attention mass the answer position puts on the question words that name
    objects (``batch.object_words``), averaged over the captured layers and question rows."""
    prefix_len = batch.prefix_ids.shape[1]
    answer_row = _answer_rows(batch)
    rows = torch.arange(batch.inputs.shape[0], device=batch.inputs.device)
    losses = []
    for index, inputs in seen.items():
        q, keys, scaling = _queries_and_keys(model, index, inputs, cache)
        q = q[rows, :, answer_row]  # (B·Q, H, d)
        scores = torch.einsum("rhd,rhkd->rhk", q, keys) * scaling
        positions = torch.arange(keys.shape[2], device=scores.device)
        scores = scores.masked_fill(positions[None, None, :] > (prefix_len + answer_row)[:, None, None], -1e9)
        probs = scores.float().softmax(-1)[..., prefix_len:]
        mass = (probs * batch.object_words[:, None, :]).sum(-1).mean(1)
        losses.append(-torch.log(mass + 1e-6).mean())
    return torch.stack(losses).mean()


def _text_losses(
    model: LlavaForConditionalGeneration,
    heads: AuxHeads,
    batch: Batch,
    view: Batch,
    cache: object,
    layers: LossLayers,
    position_start: int | None = None,
) -> dict[str, torch.Tensor]:
    """Answer, prompt and the language-side auxiliary losses for the question rows of ``batch``, continued
    from ``cache``; ``view`` is ``batch`` as the cache holds it (fewer image tokens in the language phase)."""
    capture = tuple(sorted({*layers.grounding, *layers.readout}))
    qp = question_logits(model, view, cache, capture, position_start, layers.probe)
    logits = qp.logits.float()
    ce = F.cross_entropy(
        logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE, reduction="none"
    ).view_as(batch.targets)
    valid = batch.targets != IGNORE
    answer_pos = batch.is_answer & valid
    first_answer = answer_pos & ~torch.roll(answer_pos, 1, dims=1)  # the answer word, not </s>
    correct = logits.argmax(-1)[first_answer] == batch.targets[first_answer]
    out = {
        "answer": ce[answer_pos].mean(),
        "prompt": ce[valid & ~batch.is_answer].mean(),
        "accuracy": correct.float().mean().detach(),
    }
    if layers.grounding:
        out["grounding"] = grounding_attention_loss(
            model, view, cache, {i: qp.seen[i] for i in layers.grounding}
        )
    if layers.readout:
        out["readout"] = readout_attention_loss(model, view, cache, {i: qp.seen[i] for i in layers.readout})
    if qp.probe is not None:
        grounded = batch.grounding.any(-1)
        labels = batch.patch_labels.repeat_interleave(batch.questions_per_image, 0)
        target = named_targets(batch.grounding, labels)
        out["named"] = F.binary_cross_entropy_with_logits(heads.named(qp.probe)[grounded], target[grounded])
    return out


def keep_for_language_phase(batch: Batch, background: int, generator: torch.Generator) -> torch.Tensor:
    """(B, K) sorted patch indices per image: every object patch plus ``background`` random others (more
    where an image has fewer object patches, so every image keeps K)."""
    objects = batch.patch_labels[..., 0] > 0
    k = int(objects.sum(1).max()) + background
    keep = []
    for mask in objects:
        rest = (~mask).nonzero().flatten()
        extra = rest[torch.randperm(len(rest), generator=generator)[: k - int(mask.sum())]]
        keep.append(torch.cat([mask.nonzero().flatten(), extra]).sort().values)
    return torch.stack(keep)


def language_losses(
    model: LlavaForConditionalGeneration,
    heads: AuxHeads,
    batch: Batch,
    codes: list[torch.Tensor],
    keep: torch.Tensor,
    layers: LossLayers,
) -> dict[str, torch.Tensor]:
    """Language phase: the LM reads the ideal image tokens (:func:`patch_codes`) of the ``keep`` patches at
    their original positions (the rest dropped, as a pruning method would: ~5× cheaper than all 576)."""
    language_model = model.model.language_model
    image_start = int((batch.prefix_ids[0] == model.config.image_token_id).nonzero()[0])
    tokens = patch_codes(batch.patch_labels, codes)
    picked = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
    text = language_model.get_input_embeddings()(batch.prefix_ids[:, :image_start])
    embeds = torch.cat([text, picked.to(text.dtype)], 1)
    n_img = keep.shape[0]
    text_positions = torch.arange(image_start, device=keep.device).expand(n_img, -1)
    positions = torch.cat([text_positions, image_start + keep], 1)
    cache = language_model(inputs_embeds=embeds, position_ids=positions, use_cache=True).past_key_values
    rows = keep.repeat_interleave(batch.questions_per_image, 0)
    view = dataclasses.replace(
        batch,
        prefix_ids=batch.prefix_ids[:, : image_start + keep.shape[1]],
        grounding=torch.gather(batch.grounding, 2, rows[:, None, :].expand(-1, batch.grounding.shape[1], -1)),
    )
    return _text_losses(model, heads, batch, view, cache, layers, position_start=batch.prefix_ids.shape[1])


def vision_losses(
    model: LlavaForConditionalGeneration,
    heads: AuxHeads,
    batch: Batch,
    codes: list[torch.Tensor],
    layers: LossLayers,
) -> dict[str, torch.Tensor]:
    """Vision phase: projected image tokens regress the ideal tokens; [CLS] summarises and attends to objects."""
    inner = model.model
    vision = inner.vision_tower(batch.pixel_values, output_hidden_states=True)
    selected = vision.hidden_states[model.config.vision_feature_layer]
    image_tokens = inner.multi_modal_projector(selected[:, 1:])
    return _vision_terms(
        model, heads, batch, codes, layers, image_tokens, selected[:, 0], vision.hidden_states
    )


def _patch_error(image_tokens: torch.Tensor, labels: torch.Tensor, codes: list[torch.Tensor]) -> torch.Tensor:
    """Mean squared error to the ideal tokens, averaged over object and background patches separately (the
    ~10 % object patches carry every answer and would otherwise weigh little)."""
    error = (image_tokens - patch_codes(labels, codes)).pow(2).mean(-1)
    objects = (labels[..., 0] > 0).float()
    on_objects = (error * objects).sum() / objects.sum().clamp(min=1)
    return on_objects + (error * (1 - objects)).sum() / (1 - objects).sum().clamp(min=1)


def _vision_terms(
    model: LlavaForConditionalGeneration,
    heads: AuxHeads,
    batch: Batch,
    codes: list[torch.Tensor],
    layers: LossLayers,
    image_tokens: torch.Tensor,
    cls: torch.Tensor,
    vision_states: tuple[torch.Tensor, ...],
) -> dict[str, torch.Tensor]:
    """Patch regression, [CLS] summary and [CLS]-attention losses from one vision-tower pass."""
    out = {
        "patch": _patch_error(image_tokens.float(), batch.patch_labels, codes),
        "summary": F.binary_cross_entropy_with_logits(heads.summary(cls), batch.summary),
    }
    if layers.cls:
        objects = batch.patch_labels[..., 0] > 0
        out["cls_attention"] = cls_attention_loss(model, vision_states, layers.cls, objects)
    return out


def joint_losses(
    model: LlavaForConditionalGeneration,
    heads: AuxHeads,
    batch: Batch,
    codes: list[torch.Tensor],
    layers: LossLayers,
) -> dict[str, torch.Tensor]:
    """Joint phase: the whole model on full 576-token prefixes, every loss of both phases."""
    image_tokens, cls, cache, vision_states = image_prefix(model, batch)
    out = _vision_terms(model, heads, batch, codes, layers, image_tokens, cls, vision_states)
    out.update(_text_losses(model, heads, batch, batch, cache, layers))
    return out
