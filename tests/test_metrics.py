"""Ranking metrics on hand-computed cases."""
from __future__ import annotations

import math

import pytest
import torch

from sasrec_nb import metrics as M

NEG = float("-inf")




def test_ndcg_and_hit_for_known_ranks():
    ranks = torch.tensor([0.0, 1.0, 4.0, 9.0, 10.0, 25.0])
    n10 = M.ndcg(ranks, 10)
    expected = [1.0, 1 / math.log2(3), 1 / math.log2(6), 1 / math.log2(11), 0.0, 0.0]
    assert n10.tolist() == pytest.approx(expected)
    assert M.hit(ranks, 10).tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert M.ndcg(ranks, 5).tolist() == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(6), 0, 0, 0])
    assert M.hit(ranks, 1).tolist() == [1.0, 0, 0, 0, 0, 0]


def test_summarize_averages_over_users():
    out = M.summarize(torch.tensor([0.0, 1.0, 7.0, 30.0]))
    assert set(out) == {"ndcg@5", "ndcg@10", "ndcg@20", "hit@5", "hit@10", "hit@20"}
    assert out["hit@5"] == pytest.approx(0.5)
    assert out["hit@10"] == pytest.approx(0.75)
    assert out["hit@20"] == pytest.approx(0.75)
    assert out["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert out["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(9)) / 4)


def test_rank_counts_strictly_higher_and_half_of_ties():
    scores = torch.tensor([[5.0, 3.0, 3.0, 3.0, 1.0]])
    assert M.rank_of_target(scores, torch.tensor([3.0])).tolist() == [2.5]  # 1 higher + 3 ties / 2
    assert M.rank_of_target(scores, torch.tensor([6.0])).tolist() == [0.0]
    assert M.rank_of_target(scores, torch.tensor([0.0])).tolist() == [5.0]


def test_full_ranks_exclude_history_and_padding_but_not_target():
    # items 1..6, column 0 is padding (a huge score there must not count)
    scores = torch.tensor([
        [100.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0],
        [100.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0],
        [100.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0],
    ])
    targets = torch.tensor([4, 4, 2])
    history = [
        torch.tensor([], dtype=torch.long),  # nothing excluded: items 1, 2, 3 beat item 4
        torch.tensor([1, 3, 6]),             # 1 and 3 excluded: only item 2 beats item 4
        torch.tensor([1, 2, 5]),             # the target is in the history (a repeat): it is still ranked
    ]
    ranks = M.full_ranks(scores, targets, history)
    assert ranks.tolist() == [3.0, 1.0, 0.0]
    assert scores[0, 0] == 100.0  # the caller's scores are not modified


def test_full_ranks_ties_with_the_target_count_half():
    scores = torch.tensor([[0.0, 2.0, 2.0, 2.0, 1.0]])
    assert M.full_ranks(scores, torch.tensor([2]), [torch.tensor([4])]).tolist() == [1.0]


def test_sampled_ranks_use_only_the_negatives():
    scores = torch.tensor([[NEG, 10.0, 9.0, 8.0, 1.0, 0.5, 0.2, 7.0]])
    targets = torch.tensor([7])  # score 7: items 1, 2, 3 beat it but are not negatives
    negatives = torch.tensor([[4, 5, 6]])
    assert M.sampled_ranks(scores, targets, negatives).tolist() == [0.0]
    negatives = torch.tensor([[4, 2, 6]])  # now item 2 (score 9) is a negative
    assert M.sampled_ranks(scores, targets, negatives).tolist() == [1.0]


def test_paired_difference_on_a_known_vector():
    a = torch.tensor([0.0, 0.0, 0.0, 0.0])
    b = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = M.paired_difference(a, b)
    sd = math.sqrt(((1 - 2.5) ** 2 + (2 - 2.5) ** 2 + (3 - 2.5) ** 2 + (4 - 2.5) ** 2) / 3)
    half = 1.959964 * sd / 2
    assert out["mean"] == pytest.approx(2.5)
    assert out["ci95_low"] == pytest.approx(2.5 - half)
    assert out["ci95_high"] == pytest.approx(2.5 + half)
    assert M.paired_difference(b, a)["mean"] == pytest.approx(-2.5)  # the sign is b - a


def test_paired_difference_needs_the_same_users():
    with pytest.raises(ValueError, match="same users"):
        M.paired_difference(torch.zeros(3), torch.zeros(4))
    one = M.paired_difference(torch.tensor([1.0]), torch.tensor([3.0]))
    assert one["mean"] == 2.0 and math.isnan(one["ci95_low"]) and math.isnan(one["ci95_high"])
