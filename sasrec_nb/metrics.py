"""Ranking metrics under the two protocols of the SASRec literature, always labelled.

* ``full``: the target is ranked against every item, the user's own history excluded (the
  protocol of Krichene & Rendle 2020 and Klenitskiy & Vasilev 2023).
* ``sampled100``: the target is ranked against 100 items the user never interacted with, drawn
  uniformly once per user with a fixed seed (the SASRec paper's protocol; optimistic).

Ranks are 0-based; a tie counts half (the expected rank under random tie-breaking).
NDCG@k = 1 / log2(rank + 2) when rank < k (one relevant item), Hit@k = [rank < k].
"""
from __future__ import annotations

import math

import torch

KS = (5, 10, 20)
PROTOCOLS = ("full", "sampled100")


def rank_of_target(scores: torch.Tensor, target_scores: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's target among ``scores`` (which must not contain the target)."""
    t = target_scores.unsqueeze(1)
    return (scores > t).sum(1).float() + 0.5 * (scores == t).sum(1).float()


def full_ranks(scores: torch.Tensor, targets: torch.Tensor, history: list[torch.Tensor]) -> torch.Tensor:
    """Ranks among all items, padding and the user's history excluded (the target stays)."""
    scores = scores.clone()
    rows = torch.cat([torch.full((len(h),), r, dtype=torch.long) for r, h in enumerate(history)])
    cols = torch.cat(history).to(torch.long)
    target_scores = scores.gather(1, targets[:, None]).squeeze(1)
    scores[rows.to(scores.device), cols.to(scores.device)] = float("-inf")
    scores[:, 0] = float("-inf")
    scores.scatter_(1, targets[:, None], float("-inf"))
    return rank_of_target(scores, target_scores)


def sampled_ranks(scores: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Ranks among the fixed negatives."""
    return rank_of_target(scores.gather(1, negatives), scores.gather(1, targets[:, None]).squeeze(1))


def ndcg(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user NDCG@k for one relevant item."""
    return torch.where(ranks < k, 1.0 / torch.log2(ranks + 2.0), torch.zeros_like(ranks))


def hit(ranks: torch.Tensor, k: int) -> torch.Tensor:
    return (ranks < k).float()


def summarize(ranks: torch.Tensor) -> dict[str, float]:
    """NDCG@5/10/20 and Hit@5/10/20 averaged over users."""
    out = {f"ndcg@{k}": ndcg(ranks, k).mean().item() for k in KS}
    out.update({f"hit@{k}": hit(ranks, k).mean().item() for k in KS})
    return out


def paired_difference(a: torch.Tensor, b: torch.Tensor, z: float = 1.959964) -> dict[str, float]:
    """Mean of per-user ``b − a`` and its normal 95 % confidence interval (same users, paired)."""
    if a.shape != b.shape:
        raise ValueError(f"paired metrics need the same users: {tuple(a.shape)} vs {tuple(b.shape)}")
    d = (b - a).double()
    half = z * d.std(unbiased=True).item() / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    mean = d.mean().item()
    return {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half}
