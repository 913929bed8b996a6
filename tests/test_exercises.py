"""Each exercise checker accepts a correct solution, rejects typical wrong ones (naming the case), and draws new
random cases on every call (so the printed example cannot stand in for a solution)."""
import math

import pytest
import torch

from sasrec_nb import exercises


# -- correct solutions, as a student would write them --------------------------------------------------------
class RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def fake_quant(x, s, bits):
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return torch.clamp(RoundSTE.apply(x / s), lo, hi) * s


def lsq_quantize(v, s, bits, signed):
    qn, qp = (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    g = 1 / math.sqrt(v.numel() * qp)
    s = (s - s * g).detach() + s * g
    x = torch.clamp(v / s, -qn, qp)
    return (x + (torch.round(x) - x).detach()) * s


class PACTClip(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, bits):
        ctx.save_for_backward(x, alpha)
        n = 2**bits - 1
        return torch.round(torch.clamp(x, torch.zeros_like(alpha), alpha) * n / alpha) * alpha / n

    @staticmethod
    def backward(ctx, grad):
        x, alpha = ctx.saved_tensors
        return grad * ((x >= 0) & (x <= alpha)), (grad * (x >= alpha)).sum(), None


def dorefa_weight(w, k):
    n = 2**k - 1
    t = torch.tanh(w)
    u = t / (2 * t.abs().max()) + 0.5
    return 2 * (u + (torch.round(u * n) / n - u).detach()) - 1


def apot_levels_from_terms(terms):
    sums = {0.0}
    for term in terms:
        sums = {a + b for a in sums for b in (0.0, *(2.0**-e for e in term))}
    top = max(sums)
    return torch.tensor(sorted(v / top for v in sums))


def rectified_sigmoid(v):
    return torch.clamp(torch.sigmoid(v) * 1.2 - 0.1, 0, 1)


def regularizer(v, beta):
    return (1 - (2 * rectified_sigmoid(v) - 1).abs().pow(beta)).sum()


def beta_at(t, iters, warmup=0.2, start=20.0, end=2.0):
    progress = max(0.0, (t - warmup * iters) / ((1 - warmup) * iters))
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def quantize_input(x, s):
    return torch.clamp(torch.round(x / s), -128, 127).to(torch.int8)


def int32_accumulate(q, codes):
    return q.to(torch.int32) @ codes.to(torch.int32).T


def int8_linear(x, codes, w_scale, x_scale, bias):
    return int32_accumulate(quantize_input(x, x_scale), codes).float() * (x_scale * w_scale) + bias


# -- each checker: the right solution passes, wrong ones fail ------------------------------------------
def test_split_one():
    exercises.check_split_one(lambda s: (s[:-2], (s[:-2], s[-2]), (s[:-1], s[-1])))
    with pytest.raises(AssertionError, match=r"split_one, case 0 .*validation item included"):
        exercises.check_split_one(lambda s: (s[:-2], (s[:-2], s[-2]), (s[:-2], s[-1])))


def test_ndcg_at_k():
    exercises.check_ndcg_at_k(lambda r, k: 1 / math.log2(r + 2) if r < k else 0.0)
    with pytest.raises(AssertionError, match="ndcg_at_k, case"):
        exercises.check_ndcg_at_k(lambda r, k: 1 / math.log2(r + 2))  # forgets the cut-off


def test_percent_of_fp32():
    exercises.check_percent_of_fp32(lambda q, f: 100 * q / f)
    with pytest.raises(AssertionError, match="percent_of_fp32"):
        exercises.check_percent_of_fp32(lambda q, f: q / f)


def test_round_ste_and_fake_quant():
    exercises.check_round_ste(RoundSTE, fake_quant)

    class Floor(RoundSTE):
        @staticmethod
        def forward(ctx, x):
            return torch.floor(x)

    with pytest.raises(AssertionError, match=r"RoundSTE, case 0 .*forward"):
        exercises.check_round_ste(Floor, fake_quant)

    class NoGradient(RoundSTE):
        @staticmethod
        def backward(ctx, grad):
            return torch.zeros_like(grad)

    with pytest.raises(AssertionError, match=r"∂/∂x"):
        exercises.check_round_ste(NoGradient, fake_quant)
    with pytest.raises(AssertionError, match="fake_quant"):  # the unsigned range: wrong grid
        exercises.check_round_ste(RoundSTE, lambda x, s, b: torch.clamp(RoundSTE.apply(x / s), 0, 2**b - 1) * s)


def test_lsq_quantize():
    exercises.check_lsq_quantize(lsq_quantize)

    def without_g(v, s, bits, signed):
        qn, qp = (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        x = torch.clamp(v / s, -qn, qp)
        return (x + (torch.round(x) - x).detach()) * s

    with pytest.raises(AssertionError, match=r"∂L/∂s \(with the gradient scale g\)"):
        exercises.check_lsq_quantize(without_g)

    def round_then_clamp(v, s, bits, signed):  # STE's band convention, not LSQ's
        qn, qp = (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        g = 1 / math.sqrt(v.numel() * qp)
        s = (s - s * g).detach() + s * g
        x = v / s
        return torch.clamp(x + (torch.round(x) - x).detach(), -qn, qp) * s

    with pytest.raises(AssertionError, match="lsq_quantize"):
        exercises.check_lsq_quantize(round_then_clamp)


def test_pact_function():
    exercises.check_pact_function(PACTClip)

    class LSQStyle(PACTClip):  # autograd through the rounding: adds the residual term
        @staticmethod
        def backward(ctx, grad):
            x, alpha = ctx.saved_tensors
            inside = (x >= 0) & (x <= alpha)
            return grad * inside, (grad * torch.where(inside, 0.01, 1.0)).sum(), None

    with pytest.raises(AssertionError, match=r"∂L/∂α \(clipped values only\)"):
        exercises.check_pact_function(LSQStyle)


def test_dorefa_weight():
    exercises.check_dorefa_weight(dorefa_weight)

    def detached_max(w, k):
        n = 2**k - 1
        t = torch.tanh(w)
        u = t / (2 * t.abs().max().detach()) + 0.5
        return 2 * (u + (torch.round(u * n) / n - u).detach()) - 1

    with pytest.raises(AssertionError, match="through tanh and the max"):
        exercises.check_dorefa_weight(detached_max)


def test_apot_levels_from_terms():
    exercises.check_apot_levels_from_terms(apot_levels_from_terms)
    with pytest.raises(AssertionError, match="apot_levels_from_terms"):  # forgets the normalisation
        exercises.check_apot_levels_from_terms(
            lambda terms: apot_levels_from_terms(terms) * max(sum(2.0**-min(t) for t in terms), 1e-9) + 1e-3)


def test_adaround_regularizer():
    exercises.check_adaround_regularizer(rectified_sigmoid, regularizer, beta_at)
    with pytest.raises(AssertionError, match="rectified_sigmoid"):
        exercises.check_adaround_regularizer(torch.sigmoid, regularizer, beta_at)
    with pytest.raises(AssertionError, match="β"):
        exercises.check_adaround_regularizer(rectified_sigmoid, regularizer,
                                             lambda t, n: 2 + 18 * max(0.0, 1 - max(0.0, t - 0.2 * n) / (0.8 * n)))


def test_int8_linear():
    exercises.check_int8_linear(quantize_input, int32_accumulate, int8_linear)

    def in_float(q, codes):
        return (q.float() @ codes.float().T).to(torch.int32)

    with pytest.raises(AssertionError, match=r"int32_accumulate, case 0 .*exact integers"):
        exercises.check_int8_linear(quantize_input, in_float, int8_linear)


def test_every_call_draws_new_cases():
    seen = []
    exercises.check_split_one(lambda s: seen.append(list(s)) or (s[:-2], (s[:-2], s[-2]), (s[:-1], s[-1])))
    first = list(seen)
    exercises.check_split_one(lambda s: seen.append(list(s)) or (s[:-2], (s[:-2], s[-2]), (s[:-1], s[-1])))
    assert seen[len(first):] != first


def test_torchao_weight_scale():
    pytest.importorskip("torchao")
    exercises.check_torchao_weight_scale(lambda w, bits: w.abs().amax(dim=1) / ((2**bits - 1) / 2))
    with pytest.raises(AssertionError, match=r"torchao_weight_scale, case 0 .*scales"):  # the course's abs-max
        exercises.check_torchao_weight_scale(lambda w, bits: w.abs().amax(dim=1) / (2 ** (bits - 1) - 1))
