"""Feature-space non-maximum suppression (TRIO.md §3), on the tensor's device, plus a plain-loop reference."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def cosine_similarity_matrix(features: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity of ``features`` (N, D), computed in float32."""
    f = F.normalize(features.float(), dim=-1)
    return f @ f.T


def _fill_to_k(taken: torch.Tensor, valid: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per row (ranks in descending score order): keep the first ``k`` taken ranks and top up with the
    best-ranked untaken valid ones if fewer than ``k`` were taken. ``taken``/``valid`` (G, N), ``k`` (G,)."""
    chosen = taken & (torch.cumsum(taken.int(), 1) <= k[:, None])
    short = k - chosen.sum(1)
    free = valid & ~chosen
    return chosen | (free & (torch.cumsum(free.int(), 1) <= short[:, None]))


def nms_select_batched(
    scores: list[torch.Tensor],
    features: list[torch.Tensor],
    ks: list[int],
    tau: float = 0.8,
    check_every: int = 4,
) -> list[torch.Tensor]:
    """Greedy NMS for many groups at once (one per image); returns each group's ``k`` indices, ascending.

    A token is taken if no previously taken token (by descending score) has cosine similarity ``>= tau`` with
    it. Greedy NMS is the unique fixed point of ``taken[i] = not any(taken[j] and sim[j, i] >= tau for j ranked
    before i)``; since rank ``i`` depends only on earlier ranks, Jacobi iteration from "all taken" is exact
    after at most N sweeps and in practice after a handful. Groups are padded to a common size and swept
    together: one batched matrix-vector product per sweep on the device, a host sync only every
    ``check_every`` sweeps to test convergence — no per-token or per-group host loop.
    """
    n_groups = len(scores)
    if n_groups == 0:
        return []
    device = scores[0].device
    sizes = [int(s.numel()) for s in scores]
    n = max(sizes)
    dim = features[0].shape[-1]
    padded_scores = torch.full((n_groups, n), float("-inf"), device=device)
    padded_feats = torch.zeros(n_groups, n, dim, device=device)
    valid = torch.zeros(n_groups, n, dtype=torch.bool, device=device)
    for g, (s, f) in enumerate(zip(scores, features)):
        padded_scores[g, : sizes[g]] = s.float()
        padded_feats[g, : sizes[g]] = F.normalize(f.float(), dim=-1)
        valid[g, : sizes[g]] = True
    order = torch.sort(padded_scores, dim=1, descending=True, stable=True).indices  # padding ranks last
    sim = padded_feats @ padded_feats.transpose(1, 2)
    ranked = sim.gather(1, order[:, :, None].expand(-1, -1, n)).gather(2, order[:, None, :].expand(-1, n, -1))
    ranked_valid = valid.gather(1, order)
    earlier = torch.ones(n, n, dtype=torch.bool, device=device).tril(-1)  # [i, j]: j ranked before i
    pair_valid = ranked_valid[:, :, None] & ranked_valid[:, None, :]
    suppressors = (ranked.transpose(1, 2).ge(tau) & earlier & pair_valid).float()  # [g, i, j]: j suppresses i
    taken = ranked_valid.clone()
    for sweep in range(n):
        new = ((suppressors @ taken.float()[:, :, None])[:, :, 0] == 0) & ranked_valid
        checkpoint = (sweep + 1) % check_every == 0 or sweep == n - 1
        if checkpoint and torch.equal(new, taken):
            break
        taken = new
    k = torch.tensor([min(k, size) for k, size in zip(ks, sizes)], device=device)
    chosen = _fill_to_k(taken, ranked_valid, k)
    # chosen original indices first (ascending), then the rest; slice each group's k on the host-known sizes
    keyed = torch.where(chosen, order, n + order)
    picked = torch.sort(keyed, dim=1).values
    return [picked[g, : min(ks[g], sizes[g])] for g in range(n_groups)]


def nms_select(
    scores: torch.Tensor,
    features: torch.Tensor,
    k: int,
    tau: float = 0.8,
    check_every: int = 4,
) -> torch.Tensor:
    """Greedy NMS of one group (see :func:`nms_select_batched`); ``k`` indices, ascending."""
    if k <= 0 or scores.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=scores.device)
    return nms_select_batched([scores], [features], [k], tau, check_every)[0]


def nms_select_loop(scores: torch.Tensor, features: torch.Tensor, k: int, tau: float = 0.8) -> torch.Tensor:
    """Reference: the authors' host-side loop (visit by descending score, take if not suppressed, suppress
    neighbours, stop at ``k``, top up by score). Kept for tests and ablation."""
    n = scores.numel()
    k = min(k, n)
    neighbours = (cosine_similarity_matrix(features) >= tau).cpu().numpy()
    order = torch.sort(scores.float(), descending=True, stable=True).indices.cpu().numpy()
    suppressed = np.zeros(n, dtype=bool)
    selected: list[int] = []
    for idx in order:
        if len(selected) >= k:
            break
        if suppressed[idx]:
            continue
        selected.append(int(idx))
        suppressed |= neighbours[idx]
    for idx in order:
        if len(selected) >= k:
            break
        if int(idx) not in selected:
            selected.append(int(idx))
    return torch.tensor(sorted(selected), dtype=torch.long, device=scores.device)


def topk_select(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Plain top-``k`` by score (ties broken by index), returned ascending."""
    k = min(k, scores.numel())
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    return torch.sort(order[:k]).values
