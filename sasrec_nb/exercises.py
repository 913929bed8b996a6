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


def check_lsq_step_grad(lsq_step_grad: Callable) -> None:
    """Per-element ∂v̂/∂s of LSQ eq. 3 (notebook 04; qat_methods.md §2 test case)."""
    v = torch.tensor([-1.2, -0.3, 0.05, 0.26, 0.9, 2.0])
    got = torch.as_tensor(lsq_step_grad(v, 0.25, 4, 3), dtype=torch.float32)
    want = torch.tensor([-4.0, 0.2, -0.2, -0.04, 3.0, 3.0])
    assert torch.allclose(got, want, atol=1e-5), f"got {got.tolist()}, expected {want.tolist()}"
    assert abs(got.sum().item() - 1.96) < 1e-5, "the sum over elements is 1.96 before the gradient scale"
    _passed("lsq_step_grad")


def check_pact_alpha_grad(pact_alpha_grad: Callable) -> None:
    """∂L/∂α under PACT's rule: the upstream gradient summed over clipped elements (notebook 05)."""
    x = torch.tensor([-0.5, 0.3, 1.1, 2.5, 4.0])
    got = float(pact_alpha_grad(x, 2.0, torch.ones(5)))
    assert abs(got - 2.0) < 1e-6, f"all-ones upstream: expected 2.0 (two clipped values), got {got}"
    got = float(pact_alpha_grad(x, 2.0, torch.tensor([5.0, 5.0, 5.0, 0.5, -1.5])))
    assert abs(got - (-1.0)) < 1e-6, f"only clipped elements count: expected -1.0, got {got}"
    _passed("pact_alpha_grad")


def check_dorefa_weight(dorefa_weight: Callable) -> None:
    """The paper's DoReFa weight transform, per tensor, no rescale (notebook 06)."""
    w = torch.tensor([-1.0, -0.2, 0.0, 0.3, 0.8])
    got = torch.as_tensor(dorefa_weight(w, 2), dtype=torch.float32)
    want = torch.tensor([-1.0, -1 / 3, 1 / 3, 1 / 3, 1.0])
    assert torch.allclose(got, want, atol=1e-6), f"k = 2: got {got.tolist()}, expected {want.tolist()}"
    zero = float(dorefa_weight(torch.tensor([0.0, 1.0]), 3)[0])
    assert abs(zero - 1 / 7) < 1e-6, f"a zero weight maps to 1/(2^k − 1) = {1 / 7:.6f} at k = 3, got {zero}"
    _passed("dorefa_weight")


def check_apot_levels(apot_two_bit_terms: Callable) -> None:
    """The 16 normalised APoT levels for b = 4 (notebook 07; the official set)."""
    from .quant.apot import apot_levels

    got = torch.as_tensor(apot_two_bit_terms(), dtype=torch.float32).flatten().sort().values
    want = apot_levels(4)
    assert got.numel() == 16, f"b = 4 has 16 levels, got {got.numel()}"
    assert torch.allclose(got, want, atol=1e-4), f"got {got.tolist()}"
    _passed("apot_two_bit_terms")


def check_rectified_sigmoid(rectified_sigmoid: Callable) -> None:
    """AdaRound's h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1), ζ = 1.1, γ = −0.1 (notebook 08)."""
    v = torch.tensor([-0.693147, 0.887303, -0.336472, -2.397895, 0.033336, -10.0, 10.0])
    got = torch.as_tensor(rectified_sigmoid(v), dtype=torch.float32)
    want = torch.tensor([0.3, 0.75, 0.4, 0.0, 0.51, 0.0, 1.0])
    assert torch.allclose(got, want, atol=1e-5), f"got {got.tolist()}, expected {want.tolist()}"
    _passed("rectified_sigmoid")


def check_percent_of_fp32(percent_of_fp32: Callable) -> None:
    """The share of FP32 quality a quantized model keeps (notebook 09)."""
    assert abs(float(percent_of_fp32(0.18, 0.2)) - 90.0) < 1e-9, "0.18 of 0.2 is 90 %"
    assert abs(float(percent_of_fp32(0.2, 0.2)) - 100.0) < 1e-9
    _passed("percent_of_fp32")


def check_to_uint8(to_uint8: Callable) -> None:
    """Signed activations as uint8 codes with zero point 128 (notebook 10)."""
    got = torch.as_tensor(to_uint8(torch.tensor([0.0, 0.1, -0.1, 100.0, -100.0]), 0.1))
    assert got.dtype == torch.uint8, f"codes must be uint8, got {got.dtype}"
    assert got.tolist() == [128, 129, 127, 255, 0], f"got {got.tolist()}"
    _passed("to_uint8")
