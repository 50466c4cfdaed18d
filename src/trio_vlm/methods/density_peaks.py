"""Density-peak kNN clustering and cluster means: SparseVLM's token recycling (``utils.py::cluster_and_merge``)."""

from __future__ import annotations

import torch


def density_peak_clusters(features: torch.Tensor, n_clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ``features`` (N, C) into ``n_clusters`` groups around density peaks (DPC-kNN).

    Distances are Euclidean / sqrt(C); a token's density is ``exp(-mean of its n_clusters smallest squared
    distances)`` (itself included); its parent distance is the distance to the nearest denser token (the largest
    distance overall when there is none); centres are the ``n_clusters`` tokens with the highest
    ``parent distance × density``; every token joins its nearest centre and each centre its own cluster.

    Returns ``(centres, assignment)``: centre indices (n_clusters,) in descending score order and the cluster
    id (N,) of every token. The official code adds 1e-6 uniform noise to the densities to break ties; we break
    them deterministically (a tie simply makes neither token the other's parent).
    """
    n, dim = features.shape
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must lie in 1..{n} for {n} tokens, got {n_clusters}")
    x = features.float()
    dist = torch.cdist(x[None], x[None], compute_mode="donot_use_mm_for_euclid_dist")[0] / dim**0.5
    nearest = dist.topk(n_clusters, dim=-1, largest=False).values
    density = (-(nearest**2).mean(-1)).exp()
    denser = density[None, :] > density[:, None]  # [i, j]: j is denser than i
    parent = torch.where(denser, dist, dist.max()).min(-1).values
    centres = (parent * density).topk(n_clusters).indices
    assignment = dist[centres].argmin(0)
    assignment[centres] = torch.arange(n_clusters, device=features.device)
    return centres, assignment


def cluster_means(features: torch.Tensor, assignment: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """(n_clusters, C) mean feature of each cluster, as ``sum / (count + 1e-6)`` like the official code."""
    x = features.float()
    sums = torch.zeros(n_clusters, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, assignment, x)
    counts = torch.zeros(n_clusters, dtype=x.dtype, device=x.device).index_add_(
        0, assignment, torch.ones_like(assignment, dtype=x.dtype)
    )
    return (sums / (counts[:, None] + 1e-6)).to(features.dtype)
