"""Checkers for the notebooks' exercises (the MIT efficientml-labs pattern, graded by nbgrader).

Each ``check_*`` runs a student's function on **fresh random cases drawn at check time** (seeded per call, so a
grade is reproducible but no case is one a notebook prints), compares it with the package's own implementation
(and, where a gradient is asked, with autograd through that implementation), and raises an ``AssertionError``
naming the case that failed and by how much. It prints one line when every case passes. The implementation
exercises (notebooks 03-08 and 10) ask for a method's core: a straight-through round, LSQ's step gradient,
PACT's α gradient, DoReFa's weight transform, APoT's level set, AdaRound's regulariser and β schedule, an
integer Linear.

In ``notebooks/`` the solutions sit between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (nbgrader's
markers): ``nbgrader generate_assignment`` writes the student release without them (docs/teaching.md).
"""
from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from itertools import count

import numpy as np
import torch

CASES = 6
_calls = count()


def _passed(name: str, cases: int = CASES) -> None:
    print(f"✓ {name}: all {cases} random cases match the reference")


def _generators(name: str, cases: int = CASES) -> Iterator[tuple[int, torch.Generator, np.random.Generator]]:
    """``cases`` (index, torch generator, numpy generator), seeded from the checker's name and a per-call counter."""
    base = zlib.crc32(name.encode()) + 7919 * next(_calls)
    for i in range(cases):
        yield i, torch.Generator().manual_seed(base + i), np.random.default_rng(base + i)


def _close(name: str, case: str, what: str, got, want, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    got, want = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want, dtype=torch.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{name}, {case}: {what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    if not torch.allclose(got, want, atol=atol, rtol=rtol, equal_nan=False):
        diff = (got - want).abs()
        k = int(diff.argmax())
        g, w = got.flatten()[k].item(), want.flatten()[k].item()
        raise AssertionError(f"{name}, {case}: {what} differs from the reference by up to {diff.max().item():.3g} "
                             f"(element {k}: got {g:.6g}, expected {w:.6g})")


def _random_tensor(g: torch.Generator, shape: tuple[int, ...], scale: float) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


# -- 01, 02, 09: warm-ups -----------------------------------------------------------------------------
def check_split_one(split_one: Callable) -> None:
    """Leave-one-out on one sequence (notebook 01): train, (valid input, target), (test input, target)."""
    for i, _, rng in _generators("split_one"):
        seq = rng.integers(1, 1000, size=int(rng.integers(3, 30)))
        train, (v_in, v_t), (t_in, t_t) = split_one(seq.copy())
        case = f"case {i} (a sequence of {len(seq)} items)"
        assert list(train) == list(seq[:-2]), f"split_one, {case}: train keeps all but the last two items"
        assert list(v_in) == list(seq[:-2]) and v_t == seq[-2], \
            f"split_one, {case}: validation predicts the second-to-last item from the items before it"
        assert list(t_in) == list(seq[:-1]) and t_t == seq[-1], \
            f"split_one, {case}: the test input holds every item but the last, the validation item included"
    _passed("split_one")


def check_ndcg_at_k(ndcg_at_k: Callable) -> None:
    """NDCG@k of one relevant item at a 0-based rank (notebook 02)."""
    from .metrics import ndcg

    for i, _, rng in _generators("ndcg_at_k", 12):
        k = int(rng.integers(1, 30))
        rank = int(rng.integers(0, 2 * k))
        want = ndcg(torch.tensor([rank]), k).item()
        _close("ndcg_at_k", f"case {i} (rank {rank}, k {k})", "NDCG", float(ndcg_at_k(rank, k)), want, atol=1e-6)
    _passed("ndcg_at_k", 12)


def check_percent_of_fp32(percent_of_fp32: Callable) -> None:
    """The share of FP32 quality a quantized model keeps (notebook 09)."""
    for i, _, rng in _generators("percent_of_fp32"):
        fp32, q = float(rng.uniform(0.05, 0.7)), float(rng.uniform(0.0, 0.8))
        _close("percent_of_fp32", f"case {i} ({q:.4f} of {fp32:.4f})", "the percentage",
               float(percent_of_fp32(q, fp32)), 100 * q / fp32, atol=1e-9)
    _passed("percent_of_fp32")


# -- 03: the straight-through estimator -------------------------------------------------------------------
def check_round_ste(RoundSTE, fake_quant: Callable) -> None:  # noqa: N803 (a class is what the student writes)
    """``RoundSTE.apply(x)``: round half to even forward, the identity backward; ``fake_quant(x, s, bits)``:
    s · clamp(RoundSTE(x / s), q_min, q_max) on the signed grid, whose gradients (in x and in a learnable s) must be
    the STE baseline's (notebook 03)."""
    from .quant import make_quantizer

    for i, g, rng in _generators("round_ste"):
        bits = int(rng.integers(2, 9))
        s = float(rng.uniform(0.01, 0.5))
        x = _random_tensor(g, (int(rng.integers(5, 60)),), s * 2 ** (bits - 1))
        x[:3] = torch.tensor([0.5, 2.5, -1.5]) * s  # exact ties: half to even
        case = f"case {i} ({bits} bits, s = {s:.4f})"
        upstream = torch.randn(x.shape, generator=g)
        xr = x.clone().requires_grad_()
        y = RoundSTE.apply(xr)
        _close("RoundSTE", case, "forward", y.detach(), torch.round(x), atol=0)
        y.backward(upstream)
        _close("RoundSTE", case, "∂/∂x (must be the upstream gradient itself)", xr.grad, upstream, atol=0)

        ref = make_quantizer("ste", "weight", bits)
        ref.step.data.fill_(s)
        ref.initialized.fill_(True)
        xq, xs = x.clone().requires_grad_(), torch.tensor(s, requires_grad=True)
        y = fake_quant(xq, xs, bits)
        want = ref(x.clone().requires_grad_())
        _close("fake_quant", case, "x̂", y.detach(), want.detach())
        (y * upstream).sum().backward()
        xw = x.clone().requires_grad_()
        (ref(xw) * upstream).sum().backward()
        _close("fake_quant", case, "∂L/∂x", xq.grad, xw.grad)
        _close("fake_quant", case, "∂L/∂s", xs.grad, ref.step.grad, atol=1e-4)
    _passed("RoundSTE and fake_quant")


# -- 04: LSQ -------------------------------------------------------------------------------------------
def check_lsq_quantize(lsq_quantize: Callable) -> None:
    """``lsq_quantize(v, s, bits, signed)``: LSQ's v̂ (clamp, then round; eq. 1-2) with the step gradient of eq. 3
    scaled by g = 1/√(N·Q_P), N = v.numel(), through the detach trick (notebook 04)."""
    from .quant.lsq import LSQQuantizer

    for i, g, rng in _generators("lsq_quantize"):
        bits, signed = int(rng.integers(2, 9)), bool(rng.integers(0, 2))
        s = float(rng.uniform(0.01, 0.3))
        qp = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        v = _random_tensor(g, (int(rng.integers(8, 80)),), s * qp * 0.7)
        v = v if signed else v.abs()
        upstream = torch.randn(v.shape, generator=g)
        case = f"case {i} ({bits} bits, {'signed' if signed else 'unsigned'}, s = {s:.4f}, N = {v.numel()})"
        ref = LSQQuantizer(bits, signed=signed, role="weight")
        ref.step.data.fill_(s)
        ref.initialized.fill_(True)
        vr = v.clone().requires_grad_()
        (ref(vr) * upstream).sum().backward()
        vs, ss = v.clone().requires_grad_(), torch.tensor(s, requires_grad=True)
        y = lsq_quantize(vs, ss, bits, signed)
        _close("lsq_quantize", case, "v̂", y.detach(), ref(v).detach())
        (y * upstream).sum().backward()
        _close("lsq_quantize", case, "∂L/∂v", vs.grad, vr.grad)
        _close("lsq_quantize", case, "∂L/∂s (with the gradient scale g)", ss.grad, ref.step.grad, atol=1e-6, rtol=1e-4)
    _passed("lsq_quantize")


# -- 05: PACT ------------------------------------------------------------------------------------------
def check_pact_function(PACTClip) -> None:  # noqa: N803
    """``PACTClip.apply(x, alpha, bits)``: unsigned PACT, y_q = round(clip(x, 0, α)·n/α)·α/n with n = 2^bits − 1;
    backward ∂/∂x = 1[0 ≤ x ≤ α], ∂/∂α = Σ upstream over x ≥ α (notebook 05)."""
    from .quant.pact import PACTFunction

    for i, g, rng in _generators("pact_function"):
        bits = int(rng.integers(2, 9))
        alpha = float(rng.uniform(0.5, 4.0))
        x = _random_tensor(g, (int(rng.integers(10, 80)),), alpha)
        x[0] = alpha  # on the clip edge: both x and α get the gradient
        upstream = torch.randn(x.shape, generator=g)
        case = f"case {i} ({bits} bits, α = {alpha:.4f})"
        xr, ar = x.clone().requires_grad_(), torch.tensor(alpha, requires_grad=True)
        want = PACTFunction.apply(xr, ar, 2**bits - 1, False)
        (want * upstream).sum().backward()
        xs, a = x.clone().requires_grad_(), torch.tensor(alpha, requires_grad=True)
        y = PACTClip.apply(xs, a, bits)
        _close("PACTClip", case, "y_q", y.detach(), want.detach())
        (y * upstream).sum().backward()
        _close("PACTClip", case, "∂L/∂x", xs.grad, xr.grad)
        _close("PACTClip", case, "∂L/∂α (clipped values only)", a.grad, ar.grad, atol=1e-4)
    _passed("PACTClip")


# -- 06: DoReFa ----------------------------------------------------------------------------------------
def check_dorefa_weight(dorefa_weight: Callable) -> None:
    """The paper's DoReFa weights, per tensor, no rescale (eq. 9): w_q = 2 Q_k(tanh w / (2 max|tanh w|) + ½) − 1,
    straight through Q_k and by autograd through tanh and the max (notebook 06)."""
    from .quant import make_quantizer

    for i, g, rng in _generators("dorefa_weight"):
        k = int(rng.integers(2, 9))
        w = _random_tensor(g, (int(rng.integers(4, 12)), int(rng.integers(4, 12))), float(rng.uniform(0.05, 2.0)))
        upstream = torch.randn(w.shape, generator=g)
        case = f"case {i} (k = {k}, a {tuple(w.shape)} tensor)"
        ref = make_quantizer("dorefa", "weight", k, dorefa_rescale=False)
        ref.initialized.fill_(True)
        wr = w.clone().requires_grad_()
        want = ref(wr)
        (want * upstream).sum().backward()
        ws = w.clone().requires_grad_()
        y = dorefa_weight(ws, k)
        _close("dorefa_weight", case, "w_q", y.detach(), want.detach())
        (y * upstream).sum().backward()
        _close("dorefa_weight", case, "∂L/∂w (through tanh and the max)", ws.grad, wr.grad, atol=1e-5, rtol=1e-4)
    _passed("dorefa_weight")


# -- 07: APoT ------------------------------------------------------------------------------------------
def check_apot_levels_from_terms(apot_levels_from_terms: Callable) -> None:
    """``apot_levels_from_terms(terms)``: each term offers 0 or 2^−e for each of its exponents e; the levels are every
    sum of one option per term, sorted, divided by the largest (notebook 07). The cases are random term sets, not
    the official ones."""
    from .quant.apot import levels_from_terms

    for i, _, rng in _generators("apot_levels_from_terms"):
        terms = tuple(tuple(sorted(int(e) for e in rng.choice(np.arange(1, 10), size=int(rng.integers(1, 4)),
                                                              replace=False)))
                      for _ in range(int(rng.integers(1, 4))))
        got = torch.as_tensor(apot_levels_from_terms(terms), dtype=torch.float64).flatten()
        _close("apot_levels_from_terms", f"case {i} (terms {terms})", "the level set", got,
               levels_from_terms(terms), atol=1e-6)
    _passed("apot_levels_from_terms")


# -- 08: AdaRound --------------------------------------------------------------------------------------
def check_adaround_regularizer(rectified_sigmoid: Callable, regularizer: Callable, beta_at: Callable) -> None:
    """h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1) with ζ = 1.1, γ = −0.1; f_reg(V) = Σ 1 − |2h(V) − 1|^β, with its gradient;
    β(t): 20 during the first 20 % of ``iters``, then a cosine decay to 2 (AIMET's schedule) (notebook 08)."""
    from .quant.adaround import beta_schedule, rectified_sigmoid as ref_h, rounding_regularizer

    for i, g, rng in _generators("adaround_regularizer"):
        v = _random_tensor(g, (int(rng.integers(5, 40)),), 3.0)
        beta = float(rng.uniform(2, 20))
        iters = int(rng.integers(50, 20_000))
        ts = [int(t) for t in rng.integers(0, iters, size=5)] + [0, iters // 5, iters]
        case = f"case {i} (β = {beta:.3f}, {iters} iterations)"
        _close("rectified_sigmoid", case, "h(V)", rectified_sigmoid(v.clone()), ref_h(v))
        vs, vr = v.clone().requires_grad_(), v.clone().requires_grad_()
        got = regularizer(vs, beta)
        want = rounding_regularizer(vr, beta)
        _close("regularizer", case, "f_reg", got.detach(), want.detach(), atol=1e-4)
        got.backward()
        want.backward()
        _close("regularizer", case, "∂f_reg/∂V", vs.grad, vr.grad, atol=1e-4, rtol=1e-4)
        for t in ts:
            _close("beta_at", f"{case}, t = {t}", "β(t)", float(beta_at(t, iters)), beta_schedule(t, iters), atol=1e-6)
    _passed("rectified_sigmoid, regularizer and beta_at")


# -- 10: an integer Linear -----------------------------------------------------------------------------
def check_int8_linear(quantize_input: Callable, int32_accumulate: Callable, int8_linear: Callable) -> None:
    """An integer Linear (notebook 10): ``quantize_input(x, s_x)`` → int8 codes clamp(round(x / s_x), −128, 127);
    ``int32_accumulate(q_x, codes)`` → the **int32** matrix q_x · codesᵀ, exact; ``int8_linear(x, codes, s_w, s_x, b)``
    → s_x · s_w ⊙ (q_x · codesᵀ) + b from the two.

    The reference is exact integer arithmetic. The first case has a fan-in of 65,536 with large positive codes: its
    sums reach 10^9, far beyond the 2^24 below which float32 holds every integer, so a product computed in float32
    and cast back is not exact there."""
    for i, g, rng in _generators("int8_linear"):
        fan_in = 65_536 if i == 0 else int(rng.integers(4, 300))
        out, rows = (3, 2) if i == 0 else (int(rng.integers(2, 20)), int(rng.integers(1, 10)))
        codes = torch.randint(-128, 128, (out, fan_in), generator=g, dtype=torch.int8)
        w_scale = torch.rand(out, generator=g) * 0.01 + 1e-3
        x_scale = float(rng.uniform(0.01, 0.2))
        x = _random_tensor(g, (rows, fan_in), x_scale * 60)
        if i == 0:
            codes = torch.randint(100, 128, (out, fan_in), generator=g, dtype=torch.int8)
            x = torch.randint(100, 128, (rows, fan_in), generator=g) * x_scale
        bias = torch.randn(out, generator=g)
        case = f"case {i} (inputs {rows} × {fan_in}, weights {out} × {fan_in})"
        q = torch.clamp(torch.round(x / x_scale), -128, 127).to(torch.int8)
        got_q = quantize_input(x.clone(), x_scale)
        assert got_q.dtype == torch.int8, f"quantize_input, {case}: codes must be int8, got {got_q.dtype}"
        _close("quantize_input", case, "codes", got_q, q, atol=0)
        acc = q.to(torch.int64) @ codes.to(torch.int64).T
        got_acc = int32_accumulate(q.clone(), codes.clone())
        assert got_acc.dtype == torch.int32, f"int32_accumulate, {case}: the sums must be int32, got {got_acc.dtype}"
        _close("int32_accumulate", case, "q_x · codesᵀ (exact integers)", got_acc, acc, atol=0, rtol=0)
        want = acc.double() * x_scale * w_scale.double() + bias.double()
        _close("int8_linear", case, "y", int8_linear(x, codes, w_scale, x_scale, bias), want, atol=1e-4, rtol=1e-5)
    _passed("quantize_input, int32_accumulate and int8_linear")


# -- 11: torchao's weight scale ------------------------------------------------------------------------
def check_torchao_weight_scale(torchao_weight_scale: Callable) -> None:
    """torchao's symmetric per-row weight scale (notebook 11): ``torchao_weight_scale(w, bits)`` → one scale per row
    of w, compared with the scale torchao's own ``IntxFakeQuantizer`` computes for int8 (and, for other widths, with
    the same rule: max|w| over half the code range, (q_max − q_min) / 2)."""
    from . import bridge

    bridge.torchao()
    from torchao.quantization.qat import IntxFakeQuantizeConfig, IntxFakeQuantizer

    for i, g, rng in _generators("torchao_weight_scale"):
        rows, cols = int(rng.integers(2, 12)), int(rng.integers(8, 64))
        w = _random_tensor(g, (rows, cols), float(rng.uniform(0.05, 2.0)))
        bits = 8 if i < 3 else int(rng.integers(2, 8))
        case = f"case {i} ({rows} × {cols} weights, {bits} bits)"
        if bits == 8:
            fq = IntxFakeQuantizer(IntxFakeQuantizeConfig(torch.int8, granularity="per_channel", is_symmetric=True))
            with bridge.quiet():
                fq(w)
            want = fq.scale.flatten()
        else:
            want = w.abs().amax(1) / ((2**bits - 1) / 2)
        _close("torchao_weight_scale", case, "scales", torchao_weight_scale(w.clone(), bits).flatten(), want,
               atol=1e-7, rtol=1e-5)
    _passed("torchao_weight_scale")
