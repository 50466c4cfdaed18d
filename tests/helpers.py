"""Hand-built reference computations the engine is checked against (plain loops, no trio_vlm engine code)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def prompt_embeds(model, inputs) -> torch.Tensor:
    """inputs_embeds with image features scattered in, exactly as LlavaModel builds them."""
    lm = model.model
    embeds = lm.get_input_embeddings()(inputs["input_ids"])
    feats = lm.get_image_features(pixel_values=inputs["pixel_values"], return_dict=True).pooler_output
    feats = torch.cat(list(feats), 0)
    mask = (inputs["input_ids"] == model.config.image_token_id)[..., None]
    return embeds.masked_scatter(mask, feats)


def float_causal_mask(valid: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """(B,1,S,S) additive mask: causal, padding keys masked, padding query rows see themselves."""
    seq = valid.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    allowed = causal[None] & valid[:, None, :]
    allowed = allowed | (torch.eye(seq, dtype=torch.bool)[None] & ~valid[:, :, None])
    return torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype)[:, None]


def run_layers(model, hidden, layers, positions, valid) -> torch.Tensor:
    lm = model.model.language_model
    pe = lm.rotary_emb(hidden, positions)
    mask = float_causal_mask(valid, hidden.dtype)
    for i in layers:
        hidden = lm.layers[i](hidden, attention_mask=mask, position_embeddings=pe, position_ids=positions)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    return hidden


def logits_of(model, hidden) -> torch.Tensor:
    return model.lm_head(model.model.language_model.norm(hidden))


def plain_nms(scores: np.ndarray, feats: np.ndarray, k: int, tau: float = 0.8) -> list[int]:
    """The reference selection written as plainly as possible."""
    f = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    taken, suppressed = [], set()
    for i in order:
        if len(taken) == k:
            break
        if i in suppressed:
            continue
        taken.append(i)
        suppressed |= {j for j in range(len(scores)) if float(f[i] @ f[j]) >= tau}
    for i in order:
        if len(taken) == k:
            break
        if i not in taken:
            taken.append(i)
    return sorted(taken)


def reference_probe_saliency(model, layer_index, hidden, positions, valid, k_pos=4) -> torch.Tensor:
    """The authors' probe, re-written plainly: next layer + norm + LM head on all positions, shifted logits,
    pseudo-labels = argmax at the last K valid shifted positions, mean CE, L2 norm of the input gradient."""
    saliency = []
    for b in range(hidden.shape[0]):
        with torch.enable_grad():
            h = hidden[b : b + 1].detach().clone().requires_grad_(True)
            out = run_layers(model, h, [layer_index], positions[b : b + 1], valid[b : b + 1])
            logits = logits_of(model, out).float()[0, :-1]
            n_shift_valid = int(valid[b, 1:].sum())
            rows = sorted({max(0, min(logits.shape[0] - 1, n_shift_valid - 1 - t)) for t in range(k_pos)})
            picked = logits[rows]
            loss = F.cross_entropy(picked, picked.detach().argmax(-1))
            (g,) = torch.autograd.grad(loss, h)
        saliency.append(g[0].norm(dim=-1))
    return torch.stack(saliency)


def window_global_plain(shallow, deep, budget, window):
    """The reference encoder-stage selection with explicit loops."""
    n = shallow.numel()
    side = math.isqrt(n)
    per_side = side // window
    per_window = int(budget * 0.5) // (per_side * per_side)
    grid = shallow.view(side, side)
    chosen = []
    for i in range(per_side):
        for j in range(per_side):
            win = grid[i * window : (i + 1) * window, j * window : (j + 1) * window].reshape(-1)
            for idx in torch.topk(win, per_window).indices.tolist():
                dy, dx = divmod(idx, window)
                chosen.append((i * window + dy) * side + j * window + dx)
    d = deep.clone()
    d[chosen] = 0
    chosen += torch.topk(d, budget - int(budget * 0.5)).indices.tolist()
    return sorted(chosen)


def merge_plain(features, kept):
    dropped = [i for i in range(features.shape[0]) if i not in kept]
    out = {i: [features[i]] for i in kept}
    for j in dropped:
        sims = [F.cosine_similarity(features[j], features[i], dim=0) for i in kept]
        out[kept[int(torch.stack(sims).argmax())]].append(features[j])
    return torch.stack([torch.stack(out[i]).mean(0) for i in kept])


def user_error(capsys, argv: list[str]) -> str:
    """Run the CLI on ``argv``, which must fail as a user error: exit status 2, one error line on stderr
    (no traceback) naming the command. Returns that line."""
    from trio_vlm.cli.main import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"trio-vlm {argv[0]}: error: "), err
    assert not any("Traceback" in line for line in err), err
    return err[0]
