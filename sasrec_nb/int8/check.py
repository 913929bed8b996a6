"""Quality checks of an integer model against its fake-quant twin (not against FP32: the twin is what
the integer model must reproduce; FP32 differs by the quantization error the QAT already paid)."""
from __future__ import annotations

import torch

from ..loaders import EvalSet
from ..training import evaluate


@torch.no_grad()
def top_k_agreement(a, b, seqs: torch.Tensor, k: int = 10, batch_size: int = 512) -> float:
    """Share of rows whose top-k *sets* of items are identical under models ``a`` and ``b`` (in eval mode)."""
    modes = [(m, m.training) for m in (a, b) if isinstance(m, torch.nn.Module)]
    for m, _ in modes:
        m.eval()
    same = 0
    for start in range(0, len(seqs), batch_size):
        s = seqs[start:start + batch_size]
        ta = a.scores(s).topk(k, dim=1).indices.sort(dim=1).values
        tb = b.scores(s).topk(k, dim=1).indices.sort(dim=1).values
        same += int((ta == tb).all(dim=1).sum())
    for m, training in modes:
        m.train(training)
    return same / len(seqs)


def compare_with_twin(twin, candidate, split: EvalSet) -> dict[str, float]:
    """Top-10 agreement and NDCG@10 (full ranking) of ``candidate`` and its fake-quant ``twin``."""
    mine = evaluate(candidate, split)["full"]["ndcg@10"]
    theirs = evaluate(twin, split)["full"]["ndcg@10"]
    return {"top-10 agreement": top_k_agreement(twin, candidate, split.inputs),
            "NDCG@10 twin": theirs, "NDCG@10 int8": mine, "|Δ NDCG@10|": abs(mine - theirs)}
