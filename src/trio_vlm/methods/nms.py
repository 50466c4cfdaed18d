"""Feature-space non-maximum suppression (TRIO.md §3), on the tensor's device, plus a plain-loop reference."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def cosine_similarity_matrix(features: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity of ``features`` (N, D), computed in float32."""
    f = F.normalize(features.float(), dim=-1)
    return f @ f.T


def _fill_to_k(order_taken: torch.Tensor, k: int) -> torch.Tensor:
    """Given a boolean 'taken' flag per rank (descending score order), keep the first ``k`` taken ranks and
    top up with the best-ranked untaken ones if fewer than ``k`` were taken."""
    taken_rank = torch.cumsum(order_taken.int(), 0)
    chosen = order_taken & (taken_rank <= k)
    n_taken = chosen.sum()
    free = ~chosen
    free_rank = torch.cumsum(free.int(), 0)
    return chosen | (free & (free_rank <= (k - n_taken)))


def nms_select(
    scores: torch.Tensor,
    features: torch.Tensor,
    k: int,
    tau: float = 0.8,
    check_every: int = 4,
) -> torch.Tensor:
    """Greedy NMS by descending ``scores`` over cosine similarity of ``features``; returns ``k`` indices ascending.

    A token is taken if no previously taken token has similarity ``>= tau`` with it. Greedy NMS is the unique
    fixed point of ``taken[i] = not any(taken[j] and sim[j, i] >= tau for j ranked before i)``; because rank
    ``i`` depends only on earlier ranks, Jacobi iteration from "all taken" is exact after at most N sweeps and
    usually after a handful. Each sweep is one matrix-vector product on the device; the host syncs only every
    ``check_every`` sweeps to test convergence.
    """
    n = scores.numel()
    k = min(k, n)
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=scores.device)
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    sim = cosine_similarity_matrix(features)
    ranked = sim[order][:, order]  # ranked[a, b] = sim(token ranked a, token ranked b)
    earlier = torch.ones(n, n, dtype=torch.bool, device=scores.device).tril(-1)  # [i, j]: j ranked before i
    suppressors = (ranked.T.ge(tau) & earlier).float()  # [i, j]: taken j suppresses i
    taken = torch.ones(n, dtype=torch.bool, device=scores.device)
    for sweep in range(n):
        new = (suppressors @ taken.float()) == 0
        checkpoint = (sweep + 1) % check_every == 0 or sweep == n - 1
        if checkpoint and torch.equal(new, taken):
            break
        taken = new
    chosen = _fill_to_k(taken, k)
    return torch.sort(order[chosen]).values


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
