"""Each exercise checker accepts a correct solution and rejects a typical mistake."""
import math

import pytest
import torch

from sasrec_nb import exercises


def test_split_one():
    exercises.check_split_one(lambda s: (s[:-2], (s[:-2], s[-2]), (s[:-1], s[-1])))
    with pytest.raises(AssertionError, match="test input includes the validation item"):
        exercises.check_split_one(lambda s: (s[:-2], (s[:-2], s[-2]), (s[:-2], s[-1])))


def test_ndcg_at_k():
    exercises.check_ndcg_at_k(lambda r, k: 1 / math.log2(r + 2) if r < k else 0.0)
    with pytest.raises(AssertionError):
        exercises.check_ndcg_at_k(lambda r, k: 1 / math.log2(r + 1) if 0 < r < k else float(r == 0))


def test_fake_quant():
    good = lambda x, s, b: torch.clamp(torch.round(x / s), -(2 ** (b - 1)), 2 ** (b - 1) - 1) * s  # noqa: E731
    exercises.check_fake_quant(good)
    with pytest.raises(AssertionError):
        exercises.check_fake_quant(
            lambda x, s, b: torch.clamp(torch.floor(x / s), -(2 ** (b - 1)), 2 ** (b - 1) - 1) * s)


def test_lsq_step_grad():
    def good(v, s, qn, qp):
        r = v / s
        return torch.where(r <= -qn, -float(qn), torch.where(r >= qp, float(qp), torch.round(r) - r))
    exercises.check_lsq_step_grad(good)
    with pytest.raises(AssertionError):
        exercises.check_lsq_step_grad(lambda v, s, qn, qp: torch.round(v / s) - v / s)


def test_pact_alpha_grad():
    exercises.check_pact_alpha_grad(lambda x, a, g: (g * (x >= a)).sum())
    with pytest.raises(AssertionError):
        exercises.check_pact_alpha_grad(lambda x, a, g: (x >= a).sum())


def test_dorefa_weight():
    def good(w, k):
        n, t = 2**k - 1, torch.tanh(w)
        return 2 * torch.round((t / (2 * t.abs().max()) + 0.5) * n) / n - 1
    exercises.check_dorefa_weight(good)
    with pytest.raises(AssertionError):
        exercises.check_dorefa_weight(lambda w, k: torch.round(w * (2**k - 1)) / (2**k - 1))


def test_apot_levels():
    import itertools
    terms = [[0.0] + [2.0 ** -(i + 2 * j + 1) for j in range(3)] for i in range(2)]
    sums = sorted({sum(c) for c in itertools.product(*terms)})
    exercises.check_apot_levels(lambda: torch.tensor(sums) / max(sums))
    with pytest.raises(AssertionError):
        exercises.check_apot_levels(lambda: torch.linspace(0, 1, 16))


def test_rectified_sigmoid():
    exercises.check_rectified_sigmoid(lambda v: torch.clamp(torch.sigmoid(v) * 1.2 - 0.1, 0, 1))
    with pytest.raises(AssertionError):
        exercises.check_rectified_sigmoid(torch.sigmoid)


def test_percent_of_fp32():
    exercises.check_percent_of_fp32(lambda m, f: 100 * m / f)
    with pytest.raises(AssertionError):
        exercises.check_percent_of_fp32(lambda m, f: m / f)


def test_to_uint8():
    exercises.check_to_uint8(lambda x, s: torch.clamp(torch.round(x / s) + 128, 0, 255).to(torch.uint8))
    with pytest.raises(AssertionError):
        exercises.check_to_uint8(lambda x, s: torch.clamp(torch.round(x / s), -128, 127).to(torch.int8))


def test_every_checker_is_tested():
    checkers = {n for n in dir(exercises) if n.startswith("check_")}
    tested = {n.replace("test_", "check_") for n in globals() if n.startswith("test_")}
    assert checkers <= tested, checkers - tested
