"""Checker functions for the notebooks' exercises (the MIT efficientml-labs pattern): each runs a
student's function on small fixed cases, asserts, and prints one line when it passes.

Solutions sit between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` in the notebooks;
``python scripts/make_student_copy.py`` writes copies with those parts removed.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def _passed(name: str) -> None:
    print(f"✓ {name}: all checks passed")


def check_split_one(split_one: Callable) -> None:
    """Leave-one-out on one sequence (notebook 01)."""
    seq = np.array([5, 3, 9, 1, 7, 2])
    train, (v_in, v_t), (t_in, t_t) = split_one(seq)
    assert list(train) == [5, 3, 9, 1], "train keeps all but the last two items"
    assert list(v_in) == [5, 3, 9, 1] and v_t == 7, "validation predicts the second-to-last item from the rest"
    assert list(t_in) == [5, 3, 9, 1, 7] and t_t == 2, "the test input includes the validation item"
    _passed("split_one")


def check_ndcg_at_k(ndcg_at_k: Callable) -> None:
    """NDCG@k of one relevant item at a 0-based rank (notebook 02)."""
    cases = {(0, 10): 1.0, (1, 10): 1 / np.log2(3), (9, 10): 1 / np.log2(11), (10, 10): 0.0, (3, 3): 0.0}
    for (rank, k), want in cases.items():
        got = float(ndcg_at_k(rank, k))
        assert abs(got - want) < 1e-6, f"ndcg_at_k(rank={rank}, k={k}) = {got}, expected {want:.6f}"
    _passed("ndcg_at_k")


def check_fake_quant(fake_quant: Callable) -> None:
    """Symmetric uniform fake quantization x̂ = s·clamp(round(x/s), q_min, q_max) (notebook 03)."""
    x = torch.tensor([-1.2, -0.3, 0.05, 0.26, 0.9, 2.0])
    got = fake_quant(x, 0.25, 3)
    want = torch.tensor([-1.0, -0.25, 0.0, 0.25, 0.75, 0.75])
    assert torch.allclose(got, want), f"fake_quant(x, s=0.25, bits=3) = {got.tolist()}, expected {want.tolist()}"
    got8 = fake_quant(torch.tensor([0.013, -5.0]), 0.01, 8)
    assert torch.allclose(got8, torch.tensor([0.01, -1.28])), "8 bits: q_min = -128, q_max = 127"
    _passed("fake_quant")
