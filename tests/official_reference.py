"""Independent transcriptions of the seven baselines' official code, run on the tiny LLaVA.

Each function follows its official file::function step by step, with plain loops and the tiny model's own HF
modules (the eager model's attention weights, the CLIP tower's outputs, the projector) — nothing from
``trio_vlm.methods`` or ``trio_vlm.engine``. It returns a :class:`Plan`: what the official code does to the
prefill sequence at each stage (which slots survive, in which order, which rows it creates), the original visual
indices kept (created rows numbered past the image's tokens, in creation order, as ``PruneEvent`` numbers them)
and the scores it ranked. :func:`replay` runs a plan on the prompt — with generated tokens appended, without a
cache — so prefill logits and greedy decoding can be compared with a ``trio_vlm.apply`` run. Every reference
asserts that the scores it cuts at are distinct, so no tie-breaking convention is being compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from helpers import float_causal_mask, logits_of, prompt_embeds, run_layers
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv


@dataclass
class Stage:
    """One drop: after ``layer`` decoder layers the sequence becomes ``sources`` (an int: that slot of the
    current sequence; a tensor: a new row)."""

    layer: int
    sources: list
    kept: list[int]
    scores: torch.Tensor | None = None


@dataclass
class Plan:
    prompt_len: int
    compact: bool
    stages: list[Stage] = field(default_factory=list)


# ---- running a plan ------------------------------------------------------------------------------------
def rebuild(hidden, positions, sources, tail: int, compact: bool):
    """The sequence ``sources`` (+ the last ``tail`` slots, generated tokens) from ``hidden`` (1, S, D)."""
    n = hidden.shape[1]
    order = list(sources) + list(range(n - tail, n))
    rows = [hidden[0, s] if isinstance(s, int) else s.to(hidden.dtype) for s in order]
    if compact:
        new_positions = torch.arange(len(order))[None]
    else:
        assert all(isinstance(s, int) for s in order), "created rows have no original position"
        new_positions = positions[:, order]
    return torch.stack(rows)[None], new_positions


def replay(model, embeds, plan: Plan):
    """(logits, the sequence entering the layer after each stage) of ``plan`` applied to ``embeds`` (1, S, D):
    the prompt's embeddings followed by any generated tokens' (no cache)."""
    tail = embeds.shape[1] - plan.prompt_len
    h, pos = embeds, torch.arange(embeds.shape[1])[None]
    entering, done = [], 0
    for stage in plan.stages:
        h = run_layers(model, h, range(done, stage.layer), pos, torch.ones(1, h.shape[1], dtype=torch.bool))
        h, pos = rebuild(h, pos, stage.sources, tail, plan.compact)
        entering.append(h)
        done = stage.layer
    n_layers = model.config.text_config.num_hidden_layers
    h = run_layers(model, h, range(done, n_layers), pos, torch.ones(1, h.shape[1], dtype=torch.bool))
    return logits_of(model, h), entering


def greedy(model, x, plan: Plan, steps: int) -> list[int]:
    """Greedy tokens of the plan by full recomputation, the prefill's decisions fixed (as a KV cache fixes them)."""
    embeds = prompt_embeds(model, x)
    embed = model.get_input_embeddings()
    out: list[int] = []
    for _ in range(steps):
        h = torch.cat([embeds, embed(torch.tensor([out]))], 1) if out else embeds
        out.append(int(replay(model, h, plan)[0][0, -1].argmax()))
    return out


# ---- shared pieces --------------------------------------------------------------------------------------
def assert_distinct(scores: torch.Tensor, k: int, rel: float = 1e-5) -> None:
    """The k-th and (k+1)-th largest scores differ clearly (no tie decides the cut)."""
    if 0 < k < scores.numel():
        top = torch.sort(scores.flatten().float(), descending=True).values
        assert float(top[k - 1] - top[k]) > rel * float(top[k - 1].abs() + 1e-12), "tied scores at the cut"


def image_span(model, x) -> tuple[int, int]:
    """(first position, count) of the single image's tokens of sample 0."""
    vis = (x["input_ids"][0] == model.config.image_token_id).nonzero().flatten()
    return int(vis[0]), int(vis.numel())


def eager_weights(model_eager, layer: int, hidden, positions, valid) -> torch.Tensor:
    """(B, H, S, S) attention probabilities of decoder ``layer`` from the eager model's own attention module."""
    lm = model_eager.model.language_model
    block = lm.layers[layer]
    _, weights = block.self_attn(
        hidden_states=block.input_layernorm(hidden),
        position_embeddings=lm.rotary_emb(hidden, positions),
        attention_mask=float_causal_mask(valid),
    )
    return weights


def _full(h):
    return torch.arange(h.shape[1])[None], torch.ones(1, h.shape[1], dtype=torch.bool)


# ---- FastV: src/FastV/llava-hf/.../modeling_llama.py::LlamaModel.fastv_forward ------------------------------
def fastv_official(model, eager, x, k: int, keep: int) -> Plan:
    h = prompt_embeds(model, x)
    seq = h.shape[1]
    pos, valid = _full(h)
    start, length = image_span(model, x)
    h = run_layers(model, h, range(k - 1), pos, valid)
    last_layer_attention = eager_weights(eager, k - 1, h, pos, valid)  # layer K-1's output_attentions
    avg = torch.mean(last_layer_attention, dim=1)[0]
    image = avg[-1][start : start + length]
    assert_distinct(image, keep)
    top = image.topk(keep).indices + start
    keep_indexs = torch.cat((torch.arange(start), top, torch.arange(start + length, seq))).sort().values
    kept = sorted(int(i) - start for i in top)
    return Plan(seq, compact=False, stages=[Stage(k, keep_indexs.tolist(), kept, image)])


# ---- PDrop: llava/model/modeling_llama_pdrop.py::pdrop_rank_drop (inference) ---------------------------------
def pdrop_official(model, eager, x, layers, counts) -> Plan:
    h = prompt_embeds(model, x)
    plan = Plan(h.shape[1], compact=True)
    start, n_image = image_span(model, x)
    originals = list(range(n_image))
    pos, valid = _full(h)
    done = 0
    for rank_layer, keep in zip(layers, counts):
        h = run_layers(model, h, range(done, rank_layer), pos, valid)
        # the next layer's q/k: self.layers[rank_layer]
        attn = eager_weights(eager, rank_layer, h, pos, valid)[0]
        text_query = attn[:, -1:, :]  # the last instruction token (prompt_total_len - 1)
        avg_head = torch.mean(text_query, dim=0)[:, start : start + n_image]
        avg_text = torch.mean(avg_head, dim=0)
        assert_distinct(avg_text, keep)
        top = avg_text.topk(keep).indices.sort().values.tolist()
        sources = list(range(start)) + [start + i for i in top] + list(range(start + n_image, h.shape[1]))
        originals = [originals[i] for i in top]
        plan.stages.append(Stage(rank_layer, sources, sorted(originals), avg_text))
        h, pos = rebuild(h, pos, sources, 0, compact=True)
        valid = torch.ones(1, h.shape[1], dtype=torch.bool)
        n_image, done = keep, rank_layer
    return plan


# ---- SparseVLM v1.5: modelling_sparse_llama.py::LlamaDynamicvitModel.forward, score.py, utils.py -------------
def cluster_and_merge_plain(x: torch.Tensor, n_clusters: int) -> tuple[list[int], torch.Tensor]:
    """utils.py::cluster_and_merge with loops (without its 1e-6 density noise): centres in score order and the
    mean of each cluster in that order."""
    n, c = x.shape
    d = torch.stack([torch.stack([(x[i] - x[j]).norm() for j in range(n)]) for i in range(n)]) / math.sqrt(c)
    density = torch.stack([(-(torch.sort(d[i]).values[:n_clusters] ** 2).mean()).exp() for i in range(n)])
    dmax = d.max()
    parent = []
    for i in range(n):
        denser = [float(d[i, j]) for j in range(n) if density[j] > density[i]]
        parent.append(min(denser + [float(dmax)]))
    score = torch.tensor(parent) * density
    centres = torch.topk(score, n_clusters).indices.tolist()
    members: dict[int, list[int]] = {j: [] for j in range(n_clusters)}
    for i in range(n):
        j = centres.index(i) if i in centres else int(torch.argmin(d[centres, i]))
        members[j].append(i)
    merged = torch.stack([x[members[j]].sum(0) / (len(members[j]) + 1e-6) for j in range(n_clusters)])
    return centres, merged


def sparsevlm_official(model, eager, x, layer_list, counts) -> Plan:
    """``layer_list`` counts layers run before each drop (official ``pruning_loc`` + 1)."""
    h = prompt_embeds(model, x)
    plan = Plan(h.shape[1], compact=True)
    v_token_start, v_token_num = image_span(model, x)
    text_token_start = v_token_start + v_token_num
    # raters: chosen once, from the input embeddings
    v_t = h[:, v_token_start:text_token_start]
    t_t = h[:, text_token_start:]
    m_v_t = (v_t @ t_t.transpose(1, 2)).softmax(2).mean(1)[0]
    t_token_idx = [j for j in range(m_v_t.numel()) if m_v_t[j] > m_v_t.mean()]
    assert 0 < len(t_token_idx) < m_v_t.numel()
    pruning_loc = {layer - 1: count for layer, count in zip(layer_list, counts)}
    originals, next_id = list(range(v_token_num)), v_token_num
    pos, valid = _full(h)
    for layer_idx in range(max(pruning_loc) + 1):
        if layer_idx not in pruning_loc:
            h = run_layers(model, h, [layer_idx], pos, valid)
            continue
        attn = eager_weights(eager, layer_idx, h, pos, valid)[0].mean(0)  # the sparse layer's own softmax
        out = run_layers(model, h, [layer_idx], pos, valid)
        raters = [text_token_start + j for j in t_token_idx]
        relation = attn[raters][:, v_token_start : v_token_start + v_token_num].mean(0)
        keep = min(pruning_loc[layer_idx], v_token_num - 1)
        assert_distinct(relation, keep)
        top = set(relation.topk(keep).indices.tolist())
        dropped = [i for i in range(v_token_num) if i not in top]  # where(pred_score_vis == 0)
        n_merge = int(len(dropped) * 0.3) + 1
        assert_distinct(relation[dropped], n_merge)
        stage2 = relation[dropped].topk(n_merge).indices.tolist()
        to_merge = torch.stack([out[0, v_token_start + dropped[i]] for i in stage2])
        cluster_num = int(n_merge / 10) + 1
        _, merged = cluster_and_merge_plain(to_merge, cluster_num)
        kept = sorted(top)
        sources = (
            list(range(v_token_start))
            + [v_token_start + i for i in kept]
            + list(merged)
            + list(range(text_token_start, out.shape[1]))
        )
        originals = [originals[i] for i in kept] + list(range(next_id, next_id + cluster_num))
        next_id += cluster_num
        plan.stages.append(Stage(layer_idx + 1, sources, sorted(originals), relation))
        h, pos = rebuild(out, pos, sources, 0, compact=True)
        valid = torch.ones(1, h.shape[1], dtype=torch.bool)
        v_token_num = len(kept) + cluster_num
        text_token_start = v_token_start + v_token_num
    return plan


# ---- DART: llava/model/language_model/modeling_llama_self.py::DART.get_retained_image_token ------------------
def dart_official(model, x, k: int, keep: int, exact: bool = False) -> Plan:
    """The official selection before layer ``k``; ``exact`` spreads ``keep - 4`` picks over the pivots in
    visiting order (the first ``(keep - 4) % 8`` take one more) instead of ``keep // 8`` each."""
    h = prompt_embeds(model, x)
    seq = h.shape[1]
    pos, valid = _full(h)
    start, length = image_span(model, x)
    h_in = run_layers(model, h, range(k - 1), pos, valid)
    h_out = run_layers(model, h_in, [k - 1], pos, valid)
    lm = model.model.language_model
    attn = lm.layers[k - 1].self_attn
    normed = lm.layers[k - 1].input_layernorm(h_in)
    keys = attn.k_proj(normed).view(1, seq, -1, attn.head_dim).transpose(1, 2)
    cos, sin = lm.rotary_emb(h_in, pos)
    _, keys = apply_rotary_pos_emb(keys, keys, cos, sin)
    any_states = repeat_kv(keys, attn.num_key_value_groups)  # as the official SDPA path returns them
    any_states = any_states.permute(0, 2, 1, 3).reshape(1, seq, -1)
    last_layer_state = lm.norm(h_out)
    image_l1 = torch.norm(any_states[0][start : start + length], p=1, dim=-1)
    query_l1 = torch.norm(any_states[0][start + length :], p=1, dim=-1)
    assert_distinct(image_l1, 4)
    assert_distinct(query_l1, 4)
    image_indices = (image_l1.topk(4).indices + start).tolist()
    query_indices = (query_l1.topk(4).indices + start + length).tolist()
    indices_set = set(image_indices + query_indices)
    valid_indices = set(range(start, start + length)) - set(image_indices)
    valid_list = list(valid_indices)
    pivots = list(indices_set)
    base, extra = divmod(keep - 4, len(pivots))
    for n, item in enumerate(pivots):
        token_topk = keep // 8 if not exact else base + (n < extra)
        cos_sim = -F.cosine_similarity(
            last_layer_state[0][item, :], last_layer_state[0][valid_list, :], dim=-1
        )
        assert_distinct(cos_sim, token_topk)
        picks = [valid_list[i] for i in cos_sim.topk(token_topk).indices.tolist()]
        indices_set.update(picks)
        valid_indices.difference_update(picks)
        valid_list = list(valid_indices)
    indices_set.difference_update(query_indices)
    retained = sorted(indices_set)
    keep_indexs = list(range(start)) + retained + list(range(start + length, seq))
    kept = [i - start for i in retained]
    return Plan(seq, compact=False, stages=[Stage(k, keep_indexs, kept, image_l1)])


# ---- encoder side ---------------------------------------------------------------------------------------
def tower_outputs(model_eager, x):
    """The eager CLIP tower's outputs with attentions and hidden states (what the official code reads)."""
    return model_eager.model.vision_tower(
        x["pixel_values"], output_attentions=True, output_hidden_states=True
    )


def _encoder_plan(model, x, block: torch.Tensor, kept: list[int], scores) -> Plan:
    """The prompt with the image's tokens replaced by ``block`` (rows entering the LLM), contiguous positions."""
    seq = x["input_ids"].shape[1]
    start, length = image_span(model, x)
    sources = list(range(start)) + list(block) + list(range(start + length, seq))
    return Plan(seq, compact=True, stages=[Stage(0, sources, kept, scores)])


# VisionZip: visionzip/clip_encoder.py::CLIPVisionTower_VisionZip.forward, utils.py::CLIPAttention_forward,
# main.py::visionzip (dominant - 1), llava_arch.py::encode_images_visionzip (projector on the saved tokens).
def visionzip_official(model, eager, x, dominant: int, contextual: int) -> Plan:
    out = tower_outputs(eager, x)
    dominant_num = dominant - 1
    attn_weights = out.attentions[-2][0]
    hidden_states = out.hidden_states[-2][0]
    layer = eager.model.vision_tower.encoder.layers[-2]
    heads = layer.self_attn.num_heads
    raw_keys = layer.self_attn.k_proj(layer.layer_norm1(out.hidden_states[-3][0]))
    metric = raw_keys.view(raw_keys.shape[0], heads, -1).mean(1)  # raw_key_states.mean(1): over heads
    cls_attention_sum = attn_weights[:, 0, 1:].sum(0)
    assert_distinct(cls_attention_sum, dominant_num)
    topk_indices = (cls_attention_sum.topk(dominant_num).indices + 1).tolist()
    all_indices = set([0] + topk_indices)
    dominant_tokens = [hidden_states[i] for i in range(hidden_states.shape[0]) if i in all_indices]
    filtered = [i for i in range(hidden_states.shape[0]) if i not in all_indices]
    normalized = [metric[i] / metric[i].norm() for i in filtered]
    step = max(1, len(filtered) // contextual)
    targets = list(range(0, len(filtered), step))[:contextual]
    members: dict[int, list[int]] = {t: [] for t in targets}
    for j in range(len(filtered)):
        if j not in targets:
            sims = [float(normalized[j] @ normalized[t]) for t in targets]
            members[targets[sims.index(max(sims))]].append(j)
    contextual_tokens = []
    for t in targets:
        aggregated = sum((hidden_states[filtered[j]] for j in members[t]), torch.zeros_like(hidden_states[0]))
        contextual_tokens.append(hidden_states[filtered[t]] + aggregated / max(len(members[t]), 1))
    block = model.model.multi_modal_projector(torch.stack(dominant_tokens + contextual_tokens))
    n_patches = hidden_states.shape[0] - 1
    kept = sorted([i - 1 for i in topk_indices] + [filtered[t] - 1 for t in targets] + [n_patches])
    return _encoder_plan(model, x, block, kept, cls_attention_sum)


# HoloV: llava/model/utils.py::HoloV on llava_arch.py::encode_images (projected features, head-mean [CLS] row).
def holov_official(model, eager, x, new_image_token_num: int, num_patches: int) -> Plan:
    out = tower_outputs(eager, x)
    image_token = model.model.multi_modal_projector(out.hidden_states[-2][0, 1:])
    image_attention = out.attentions[-2][0, :, 0, 1:].mean(0).float()
    n, dim = image_token.shape
    patch_size, remainder = n // num_patches, n % num_patches
    patches, start = [], 0
    for p in range(num_patches):
        size = patch_size + (1 if p < remainder else 0)
        if size > 0:
            patches.append(list(range(start, start + size)))
        start += size
    patch_scores = []
    for idx in patches:
        tokens, attn = image_token[idx], image_attention[idx]
        if len(idx) <= 1:
            patch_scores.append(attn.mean())
            continue
        normalized = tokens / (tokens.norm(dim=1, keepdim=True) + 1e-6)
        s = (normalized @ normalized.T) * (1 - torch.eye(len(idx)))
        mean_sim = s.sum(dim=1) / (len(idx) - 1)
        var_sim = ((s - mean_sim[:, None]) ** 2).sum(dim=1) / (len(idx) - 1)
        scaled = attn * 1e3
        var_scaling = scaled.abs().mean() / (var_sim.abs().mean() + 1e-6)
        patch_scores.append((scaled + 0.09 * var_sim * var_scaling).mean())
    weights = torch.stack(patch_scores)
    weights = weights / (weights.sum() + 1e-6)
    allocated = (weights * new_image_token_num).floor().long()
    remaining = new_image_token_num - int(allocated.sum())
    if remaining > 0:
        for i in torch.topk(weights, min(remaining, len(weights))).indices[:remaining]:
            allocated[i] += 1
    chosen: list[int] = []
    for idx, alloc in zip(patches, allocated.tolist()):
        if alloc <= 0:
            continue
        if alloc >= len(idx):
            chosen += idx
        else:
            assert_distinct(image_attention[idx], alloc)
            chosen += [idx[i] for i in torch.topk(image_attention[idx], alloc).indices.tolist()]
    pad = new_image_token_num - len(chosen)
    rows = [image_token[i] for i in chosen] + [torch.zeros(dim)] * pad
    kept = sorted(chosen) + list(range(n, n + pad))
    return _encoder_plan(model, x, torch.stack(rows), kept, image_attention)


# SCOPE: scope/clip_encoder.py::CLIPVisionTower_SCOPE.forward and SCOPE (batch 1, ALPHA=1, COMBINED=multi).
def scope_official(model, eager, x, num_token: int) -> Plan:
    out = tower_outputs(eager, x)
    cls_attention_sum = out.attentions[-2][0, :, 0, 1:].sum(0)
    features = out.hidden_states[-2][0, 1:]
    n = features.shape[0]
    norm = features / features.norm(dim=-1, keepdim=True)
    cosine = norm @ norm.T
    selected: list[int] = []
    cur_max = torch.zeros(n)
    for _ in range(num_token):
        gains = [
            -math.inf
            if i in selected
            else float((cosine[:, i] - cur_max).clamp(min=0).sum() * cls_attention_sum[i])
            for i in range(n)
        ]
        assert_distinct(torch.tensor([g for g in gains if g > -math.inf]), 1)
        best = gains.index(max(gains))
        selected.append(best)
        cur_max = torch.maximum(cur_max, cosine[best])
    kept = sorted(selected)  # the mask keeps ascending order
    block = model.model.multi_modal_projector(features[kept])
    return _encoder_plan(model, x, block, kept, cls_attention_sum)
