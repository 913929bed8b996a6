"""APoT (qat_methods.md §5): official level sets, the verified 4-bit example, export, ties, clipping."""
import pytest
import torch

from sasrec_nb.quant import make_quantizer
from sasrec_nb.quant.apot import MidpointBins, apot_levels


def ready(q, alpha):
    q.alpha.data.fill_(alpha)
    q.initialized.fill_(True)
    return q


def test_official_level_sets():
    assert torch.equal(apot_levels(2), torch.tensor([0, 0.25, 0.5, 1]))
    assert torch.allclose(apot_levels(3), torch.tensor([0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1]), atol=1e-7, rtol=0)
    b4 = torch.tensor([0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]) / 48
    assert torch.allclose(apot_levels(4), b4, atol=1e-7, rtol=0)
    rounded = [0, .0208, .0417, .0625, .0833, .125, .1667, .1875, .25, .3333, .375, .5, .6667, .6875, .75, 1]
    assert torch.allclose(apot_levels(4), torch.tensor(rounded), atol=5e-5, rtol=0)
    assert torch.equal(apot_levels(1), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("B, count", [(1, 2), (2, 4), (3, 8), (4, 16), (5, 32), (6, 64), (7, 128), (8, 256)])
def test_level_counts(B, count):
    lv = apot_levels(B)
    assert lv.numel() == count == lv.unique().numel()
    assert lv[0] == 0 and lv[-1] == 1 and bool((lv.diff() > 0).all())


def test_verified_4bit_weight_example():
    q = ready(make_quantizer("apot", "weight", 4, apot_normalize=False), 1.5)
    w = torch.tensor([-2.0, -0.5, 0.05, 0.4, 0.7, 1.2], requires_grad=True)
    y = q(w)
    y.sum().backward()
    assert torch.allclose(y, torch.tensor([-1.5, -0.45, 0.0, 0.45, 0.6, 1.2]), atol=1e-6, rtol=0)
    assert torch.equal(w.grad, torch.tensor([0.0, 1, 1, 1, 1, 1]))
    assert q.alpha.grad.item() == pytest.approx(-1.033333, abs=1e-5)
    assert q.levels().numel() == 15


def test_weight_normalisation_is_reapplied():
    torch.manual_seed(0)
    w = torch.randn(6, 32) * 0.1 + 0.05
    q = make_quantizer("apot", "weight", 4, axis=0, channels=6)
    y = q(w)
    assert torch.equal(q.alpha.detach(), torch.full((6,), 3.0))
    mu, sigma = w.mean(1, keepdim=True), w.std(1, keepdim=True)
    u = ((w - mu) / sigma / 3.0).clamp(-1, 1)
    mag = apot_levels(3)
    nearest = mag[(u.abs().unsqueeze(-1) - mag).abs().argmin(-1)] * u.sign()
    assert torch.allclose(y, nearest * 3.0 * sigma + mu, atol=1e-6, rtol=0)
    assert q.levels().shape == (6, 15)
    assert torch.allclose(q.levels()[:, 7], mu.squeeze(1), atol=1e-7, rtol=0)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weight_export_round_trip(bits):
    torch.manual_seed(1)
    w = torch.randn(5, 16)
    w[0] = 0.0  # a padding row
    q = make_quantizer("apot", "weight", bits, axis=0, channels=5)
    y = q(w)
    e = q.export(w)
    assert e.codes.dtype == torch.uint8 and e.levels.numel() == 2 * apot_levels(bits - 1).numel() - 1
    assert torch.allclose(e.dequantize(), y, atol=1e-6, rtol=0)
    assert torch.equal(e.offset, w.mean(1))


@pytest.mark.parametrize("signed", [True, False])
def test_act_export_round_trip(signed):
    torch.manual_seed(2)
    x = torch.randn(4, 7, 8) * 2
    q = make_quantizer("apot", "act", 5, signed=signed)
    y = q(x)
    assert q.alpha.item() == pytest.approx(x.abs().max().item())
    e = q.export(x)
    assert e.offset is None and e.levels.numel() == (31 if signed else 32)
    assert torch.allclose(e.dequantize(), y, atol=1e-6, rtol=0)


def test_ties_go_to_the_level_nearer_zero():
    act = ready(make_quantizer("apot", "act", 2, signed=False), 1.0)
    x = torch.tensor([0.125, 0.375, 0.75, 0.7500001])
    for _ in range(3):
        assert torch.equal(act(x), torch.tensor([0.0, 0.25, 0.5, 1.0]))
    wq = ready(make_quantizer("apot", "weight", 3, apot_normalize=False), 2.0)
    assert torch.equal(wq(torch.tensor([-1.5, -0.25, 0.25, 1.5])), torch.tensor([-1.0, 0.0, 0.0, 1.0]))


def test_unsigned_activation_clips_at_zero_and_alpha():
    q = make_quantizer("apot", "act", 3, signed=False)
    q.start_calibration()
    q(torch.tensor([0.5, 2.0]))
    q.finish_calibration()
    assert q.alpha.item() == 2.0
    x = torch.tensor([-1.0, 0.0, 0.45, 1.1, 2.0, 3.0], requires_grad=True)
    y = q(x)
    y.sum().backward()
    assert torch.allclose(y, torch.tensor([0.0, 0.0, 0.4, 1.2, 2.0, 2.0]), atol=1e-6, rtol=0)
    assert torch.equal(x.grad, torch.tensor([0.0, 1, 1, 1, 1, 0]))
    # RCF: (Π(u) − u) inside, 1 above the clip, 0 below it
    assert q.alpha.grad.item() == pytest.approx(0 + 0 - 0.025 + 0.05 + 0 + 1, abs=1e-6)


def test_two_bit_weight_is_ternary():
    q = make_quantizer("apot", "weight", 2, apot_normalize=False)
    y = q(torch.tensor([-1.0, -0.4, 0.2, 0.6, 0.9]))
    assert q.alpha.item() == 1.0
    assert torch.equal(y, torch.tensor([-1.0, 0.0, 0.0, 1.0, 1.0]))
    assert torch.equal(q.levels(), torch.tensor([-1.0, 0.0, 1.0]))


@pytest.mark.parametrize("role, bits", [("weight", 1), ("weight", 9), ("act", 1), ("act", 9)])
def test_unsupported_bits(role, bits):
    with pytest.raises(ValueError, match="2 to 8"):
        make_quantizer("apot", role, bits)


def test_8bit_weight_close_to_float():
    torch.manual_seed(3)
    w = torch.nn.init.xavier_normal_(torch.empty(32, 32))
    err = {}
    for bits in (4, 8):
        q = make_quantizer("apot", "weight", bits, axis=0, channels=32)
        err[bits] = ((q(w) - w).pow(2).mean().sqrt() / w.std()).item()
    assert torch.allclose(q.alpha, ((w - w.mean(1, keepdim=True)) / w.std(1, keepdim=True)).abs().amax(1))
    assert err[8] < 0.025 < 0.08 < err[4]


def test_gradients_are_finite_with_a_zero_row():
    w = torch.randn(3, 8)
    w[0] = 0.0
    w.requires_grad_(True)
    q = make_quantizer("apot", "weight", 4, axis=0, channels=3)
    (q(w) * torch.randn(3, 8)).sum().backward()
    assert torch.isfinite(w.grad).all() and torch.isfinite(q.alpha.grad).all()


@pytest.mark.parametrize("B", range(2, 9))
def test_midpoint_bins_count_like_bucketize(B):
    lv = apot_levels(B)
    mids = (lv[1:] + lv[:-1]) / 2
    ties = torch.cat([mids, lv, torch.nextafter(mids, torch.ones(1)), torch.nextafter(mids, torch.zeros(1))])
    a = torch.cat([torch.rand(50_000, generator=torch.Generator().manual_seed(B)), ties, torch.tensor([0.0, 1.0])])
    bins = MidpointBins(lv)
    assert torch.equal(bins.count_below(a), torch.bucketize(a, mids))
    assert torch.equal(bins.nearest(a), lv[torch.bucketize(a, mids)])


@pytest.mark.parametrize("signed", [True, False])
def test_nearest_is_the_table_entry_of_the_exported_code(signed):
    q = ready(make_quantizer("apot", "act", 8, signed=signed), 2.0)
    u = torch.linspace(-1.0 if signed else 0.0, 1.0, 10_001)
    assert torch.equal(q.nearest(u), q.table[q.project(u)])


@pytest.mark.parametrize("signed,axis", [(True, None), (False, None), (True, 0)])
def test_fused_forward_and_gradients_equal_the_written_out_straight_through_form(signed, axis):
    """α · (Π(u).detach() + u − u.detach()), u = clip(x/α): what _APoTRound computes in one node."""
    torch.manual_seed(3)
    x = torch.randn(6, 40, dtype=torch.float64) * 2
    x[0, :4] = torch.tensor([2.5, -2.5, 1.0, -1.0])  # beyond α and exactly at ±α (α = 1 below)
    q = make_quantizer("apot", "act", 5, signed=signed) if axis is None else \
        make_quantizer("apot", "weight", 5, axis=0, channels=6, apot_normalize=False)
    q.double().initialized.fill_(True)
    q.alpha.data = torch.linspace(1.0, 2.0, q.alpha.numel(), dtype=torch.float64).reshape(q.alpha.shape)
    xa = x.clone().requires_grad_()
    got = q(xa)
    got.backward(torch.linspace(-1, 1, x.numel(), dtype=torch.float64).view_as(x))
    got_grads = xa.grad.clone(), q.alpha.grad.clone()

    xb, q.alpha.grad = x.clone().requires_grad_(), None
    alpha = q.alpha.clamp_min(1e-8).view(-1, 1) if axis == 0 else q.alpha.clamp_min(1e-8)
    u = torch.clamp(xb / alpha, -1.0 if signed else 0.0, 1.0)
    want = alpha * (q.nearest(u.detach()) + u - u.detach())
    want.backward(torch.linspace(-1, 1, x.numel(), dtype=torch.float64).view_as(x))
    assert torch.allclose(got, want, rtol=1e-12, atol=0)  # (Π + u) − u differs from Π by rounding only
    assert torch.allclose(got_grads[0], xb.grad, rtol=1e-12, atol=0)  # autograd's (g·α)/α vs g
    assert torch.equal(got_grads[0] != 0, xb.grad != 0)
    assert torch.allclose(got_grads[1], q.alpha.grad, rtol=1e-12)


@pytest.mark.parametrize("signed", [True, False])
def test_nearest_saturates_outside_the_grid(signed):
    q = make_quantizer("apot", "act", 4, signed=signed)
    u = torch.tensor([-7.0, -1.0001, 1.0001, 7.0])
    want = torch.tensor([-1.0, -1.0, 1.0, 1.0]) if signed else torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.equal(q.nearest(u), want)


@pytest.mark.parametrize("B, options", [
    # the official builder's three terms for B = 5 (uneven: 4, 4 and 2 options) and B = 6 (4 options each)
    (5, [(0, 2**-1, 2**-3, 2**-6), (0, 2**-2, 2**-4, 2**-7), (0, 2**-5)]),
    (6, [(0, 2**-1, 2**-4, 2**-7), (0, 2**-2, 2**-5, 2**-8), (0, 2**-3, 2**-6, 2**-9)]),
])
def test_five_and_six_bit_level_values(B, options):
    sums = sorted({a + b + c for a in options[0] for b in options[1] for c in options[2]})
    expected = torch.tensor(sums, dtype=torch.float64) / max(sums)
    assert torch.allclose(apot_levels(B).double(), expected, atol=1e-7, rtol=0)
    if B == 6:  # hand-checkable ends: the largest sum is 1/2 + 1/4 + 1/8, the smallest non-zero 2^-9
        assert max(sums) == 7 / 8 and apot_levels(6)[1].item() == pytest.approx((2**-9) / (7 / 8))


def test_gradient_flows_through_the_weight_normalisation():
    """With normalisation the weight gradient is autograd's through μ and σ (ImageNet code: both differentiable),
    around the straight-through projection; it differs from the plain straight-through mask."""
    torch.manual_seed(3)
    w = (torch.randn(4, 16) * 0.1).requires_grad_()
    q = make_quantizer("apot", "weight", 4, axis=0, channels=4)
    q.init_from(w.detach())
    q.initialized.fill_(True)
    upstream = torch.randn(4, 16)
    (q(w) * upstream).sum().backward()

    w2 = w.detach().clone().requires_grad_()
    mu, sigma = w2.mean(1, keepdim=True), w2.std(1, keepdim=True)
    u = ((w2 - mu) / sigma / 3.0).clamp(-1, 1)
    mag = apot_levels(3)
    projected = mag[(u.detach().abs().unsqueeze(-1) - mag).abs().argmin(-1)] * u.detach().sign()
    y2 = sigma * 3.0 * (u + (projected - u).detach()) + mu  # straight through the projection only
    (y2 * upstream).sum().backward()
    assert torch.allclose(w.grad, w2.grad, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(w.grad, upstream * (u.abs() < 1).float(), atol=1e-3)
