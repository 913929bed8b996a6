"""PACT and DoReFa: the verified cases of qat_methods.md §3-4, export, per-channel and integration."""
import pytest
import torch

from sasrec_nb.model import SASRec
from sasrec_nb.quant import make_quantizer, param_groups, quantize_model, quantizers, ranges, round_ste

ATOL = 1e-5


def fixed_pact(bits: int, alpha: float, signed: bool):
    q = make_quantizer("pact", "act", bits, signed=signed)
    q.alpha.data.fill_(alpha)
    q.initialized.fill_(True)
    return q


def close(a: torch.Tensor, b) -> bool:
    return torch.allclose(a, torch.as_tensor(b, dtype=a.dtype), atol=ATOL, rtol=0)


# -- PACT ------------------------------------------------------------------------------------------
def test_pact_reference_case():
    q = fixed_pact(2, 2.0, signed=False)
    x = torch.tensor([-0.5, 0.3, 1.1, 2.5, 4.0], requires_grad=True)
    y = q(x)
    y.sum().backward()
    assert close(y, [0, 0, 4 / 3, 2, 2])
    assert close(x.grad, [0, 1, 1, 0, 0])
    assert q.alpha.grad.item() == pytest.approx(2.0, abs=ATOL)


def test_pact_alpha_gradient_differs_from_lsq_style_autograd():
    x = torch.tensor([-0.5, 0.3, 1.1, 2.5, 4.0])
    a = torch.tensor(2.0, requires_grad=True)
    s = a / 3
    (round_ste(torch.minimum(x.clamp_min(0), a) / s) * s).sum().backward()
    assert a.grad.item() == pytest.approx(1.966667, abs=ATOL)
    q = fixed_pact(2, 2.0, signed=False)
    q(x).sum().backward()
    assert q.alpha.grad.item() == pytest.approx(2.0, abs=ATOL)


def test_pact_signed_variant_gradient():
    q = fixed_pact(3, 2.0, signed=True)  # 3 steps per side, grid {0, ±2/3, ±4/3, ±2}
    x = torch.tensor([-3.0, -2.0, -0.9, 0.2, 0.7, 2.5], requires_grad=True)
    y = q(x)
    y.backward(torch.arange(1.0, 7.0))
    assert close(y, [-2, -2, -2 / 3, 0, 2 / 3, 2])
    assert close(x.grad, [0, 2, 3, 4, 5, 0])  # x = −α is inside: both x and α get the gradient
    assert q.alpha.grad.item() == pytest.approx(-1 - 2 + 6, abs=ATOL)  # sign(x) where |x| ≥ α
    assert close(q.levels(), [-2, -4 / 3, -2 / 3, 0, 2 / 3, 4 / 3, 2])


def calibrated(q, x: torch.Tensor):
    q.start_calibration()
    q(x)
    q.finish_calibration()
    return q


def test_pact_alpha_init_from_calibration_rule_or_constant():
    x = torch.tensor([0.0, 0.5, 3.5, 1.0])
    q = calibrated(make_quantizer("pact", "act", 4, signed=False, pact_alpha_rule="absmax"), x)
    assert q.scale.item() == pytest.approx(3.5)
    assert q.clipped_fraction(x) == 0.0
    q = make_quantizer("pact", "act", 4, signed=False, pact_alpha_init=10.0)
    q(x)
    assert q.scale.item() == pytest.approx(10.0)
    with pytest.raises(ValueError, match="range rule"):
        make_quantizer("pact", "act", 4, pact_alpha_rule="max")


def test_pact_default_start_is_the_mse_clip():
    """α₀ = argmin over c_k = k/100 · max|x| of the quantization MSE (ranges.DEFAULT["pact"]); on a heavy tail at 2
    bits that clips the tail, where the abs-max start would round almost everything to 0."""
    x = torch.cat([torch.linspace(-1, 1, 201), torch.tensor([4.0])])
    q = calibrated(make_quantizer("pact", "act", 2), x)  # signed: {−α, 0, α}
    assert ranges.DEFAULT["pact"] == "mse" and q.alpha_rule == "mse"
    assert q.scale.item() == pytest.approx(ranges.clip_value(x, "mse", -1, 1).item())
    assert q.scale.item() < 2.0  # the outlier clips
    assert (q(x) == 0).float().mean() < 0.6
    absmax = calibrated(make_quantizer("pact", "act", 2, pact_alpha_rule="absmax"), x)
    assert (absmax(x) == 0).float().mean() > 0.99  # every value but the outlier rounds to 0


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8, 12])
def test_pact_export_round_trip(bits, signed):
    x = torch.randn(64, generator=torch.Generator().manual_seed(bits)) * 2
    q = fixed_pact(bits, 1.5, signed=signed)
    e = q.export(x)
    assert torch.allclose(e.dequantize(), q(x), atol=1e-6)
    n = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    assert e.scale.item() == pytest.approx(1.5 / n)
    assert e.codes.dtype == (torch.int32 if bits > 8 else torch.int8 if signed else torch.uint8)


def test_pact_weight_decay_in_param_groups():
    model = SASRec(20, 8, 1, 1, 5)
    for decay, options in ((1e-4, {}), (1e-3, {"pact_alpha_decay": 1e-3})):
        qmodel = quantize_model(model, "pact", **options)
        alphas = {id(q.alpha) for q in quantizers(qmodel, "act").values()}
        groups = [g for g in param_groups(qmodel, 1e-3) if g["name"] != "weights"]
        assert all(g["weight_decay"] == decay for g in groups)
        assert {id(p) for g in groups for p in g["params"]} == alphas


def test_pact_weights_are_dorefa():
    q = make_quantizer("pact", "weight", 4, axis=0, channels=3, dorefa_rescale=False)
    assert q.method == "dorefa" and not q.rescale


# -- DoReFa weights --------------------------------------------------------------------------------
def test_dorefa_weight_reference_case():
    q = make_quantizer("dorefa", "weight", 2, dorefa_rescale=False)
    w = torch.tensor([-1.0, -0.2, 0.0, 0.3, 0.8], requires_grad=True)
    assert close(q.normalise(w.detach()), [0, 0.370420, 0.5, 0.691252, 0.935952])
    y = q(w)
    y.sum().backward()
    assert close(y, [-1, -1 / 3, 1 / 3, 1 / 3, 1])
    assert close(w.grad, [0.548820, 1.261883, 1.313035, 1.201607, 0.734059])
    v = w.detach().clone().requires_grad_()
    t = torch.tanh(v)
    (t / t.abs().max()).sum().backward()  # the smooth surrogate, gradient through the max included
    assert torch.allclose(w.grad, v.grad, atol=1e-6)


@pytest.mark.parametrize("bits, value", [(2, 0.333333), (3, 0.142857), (4, 0.066667), (8, 0.003922)])
def test_dorefa_zero_weight_has_no_zero_level(bits, value):
    q = make_quantizer("dorefa", "weight", bits, dorefa_rescale=False)
    y = q(torch.tensor([-1.0, 0.0, 0.3, 0.8]))
    assert y[1].item() == pytest.approx(value, abs=ATOL)
    assert not (q.levels() == 0).any() and q.levels().numel() == 2**bits


def test_dorefa_one_bit_weights():
    q = make_quantizer("dorefa", "weight", 1)
    w = torch.tensor([-1.0, -0.2, 0.0, 0.3, 0.5], requires_grad=True)
    y = q(w)
    y.sum().backward()
    e = 0.4  # mean|w|, a stop-gradient
    assert close(y, [-e, -e, e, e, e])  # zero maps to +E
    assert close(w.grad, torch.ones(5))
    assert q.scale.item() == pytest.approx(e)


def test_dorefa_rescale_is_the_least_squares_scale_of_the_latent_weights():
    q = make_quantizer("dorefa", "weight", 2)
    w = torch.tensor([-0.05, 0.01, 0.02, 0.04])
    unit = [-1, 1 / 3, 1 / 3, 1]  # the paper's w_q for these weights, worked out by hand
    c = (0.05 + 0.01 / 3 + 0.02 / 3 + 0.04) / (1 + 1 / 9 + 1 / 9 + 1)  # = 0.045
    assert close(q(w), [c * u for u in unit])
    q(w * 2)
    assert q.scale.item() == pytest.approx(2 * c)


def test_dorefa_per_channel_weights():
    w = torch.tensor([[-1.0, -0.2, 0.0, 0.3], [0.05, -0.02, 0.01, 0.04]])
    q = make_quantizer("dorefa", "weight", 2, axis=0, channels=2)
    q.init_from(w)
    y = q(w)
    # row 0: w_q = [-1, -1/3, 1/3, 1/3] (1.5 rounds to 2, half to even); row 1: [1, -1/3, 1/3, 1]
    assert close(q.scale, [(1 + 0.2 / 3 + 0.1) / (1 + 3 / 9), (0.09 + 0.01) / (2 + 2 / 9)])
    assert q.levels().shape == (2, 4)
    for row in range(2):  # each row is the per-tensor quantizer applied to that row alone
        alone = make_quantizer("dorefa", "weight", 2)
        assert torch.allclose(y[row], alone(w[row]), atol=1e-6)
    assert close(y[1], [0.045 * u for u in (1, -1 / 3, 1 / 3, 1)])
    per_tensor = make_quantizer("dorefa", "weight", 2)
    assert not torch.allclose(per_tensor(w)[1], y[1], atol=1e-3)


@pytest.mark.parametrize("rescale", [True, False])
@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("axis", [None, 0])
def test_dorefa_weight_export_round_trip(bits, axis, rescale):
    w = torch.randn(6, 5, generator=torch.Generator().manual_seed(bits)) * 0.1
    w[2] = 0.0  # a padding row
    q = make_quantizer("dorefa", "weight", bits, axis=axis, channels=None if axis is None else 6,
                       dorefa_rescale=rescale)
    e = q.export(w)
    assert torch.allclose(e.dequantize(), q(w), atol=1e-6)
    assert e.codes.dtype == (torch.uint8 if bits <= 8 else torch.int32)
    assert int(e.codes.max()) <= 2**bits - 1
    assert close(e.levels, 2 * torch.arange(2**bits) / (2**bits - 1) - 1)


@pytest.mark.parametrize("method", ["dorefa", "pact"])
def test_16_bit_weights_close_to_float_only_with_rescale(method):
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(0)) * 0.05
    q = make_quantizer(method, "weight", 16, axis=0, channels=8)
    assert torch.allclose(q(w), w, atol=1e-3)
    raw = make_quantizer(method, "weight", 16, axis=0, channels=8, dorefa_rescale=False)
    assert raw(w).abs().amax().item() == pytest.approx(1.0)  # the scale mismatch


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_dorefa_latent_start_maps_back_to_the_trained_weights(bits):
    """tanh squeezes a row's large weights; the latent start undoes it (up to rounding)."""
    spread = torch.tensor([0.02, 0.1, 0.3, 0.6, 1.0])[:, None]
    w = torch.randn(5, 50, generator=torch.Generator().manual_seed(1)) * spread
    q = make_quantizer("dorefa", "weight", bits, axis=0, channels=5)
    v = q.latent_from(w)
    half_step = w.abs().amax(1, keepdim=True) / (2**bits - 1)
    assert ((q(v) - w).abs() <= 1.25 * half_step).all()  # the least-squares c moves the grid a little
    assert ((q(w) - w).abs() > 1.25 * half_step).any()  # without it the trained weights move by more
    assert torch.equal(v.sign(), w.sign()) and (v.abs().argmax(1) == w.abs().argmax(1)).all()


def test_dorefa_latent_start_is_the_identity_when_off_without_rescale_or_at_one_bit():
    w = torch.randn(4, 8)
    assert torch.equal(make_quantizer("dorefa", "weight", 8, dorefa_latent_start=False).latent_from(w), w)
    assert torch.equal(make_quantizer("dorefa", "weight", 8, dorefa_rescale=False).latent_from(w), w)
    assert torch.equal(make_quantizer("dorefa", "weight", 1).latent_from(w), w)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_dorefa_unrounded_weights_round_to_the_forward(bits):
    w = torch.randn(3, 40, generator=torch.Generator().manual_seed(2)) * 0.3
    q = make_quantizer("dorefa", "weight", bits, axis=0, channels=3)
    half_step = q.magnitude_of(w)[:, None] / (2**bits - 1)
    assert ((q(w) - q.unrounded(w)).abs() <= half_step * (1 + 1e-5)).all()


@pytest.mark.parametrize("method", ["dorefa", "pact", "lsq"])
def test_quantize_model_starts_at_the_fp32_weights(method):
    torch.manual_seed(0)
    model = SASRec(30, 16, 2, 1, 8)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)  # rows reaching ~1: where the tanh transform bends
    qmodel = quantize_model(model, method, 8, 8)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            qm = qmodel.get_submodule(name)
            if method == "lsq":  # a grid on the weights themselves: nothing to invert
                assert torch.equal(qm.weight, m.weight)
                continue
            assert not torch.equal(qm.weight, m.weight)
            start = qm.weight_quantizer(qm.weight).detach()
            assert ((start - m.weight).abs() <= 1.25 * m.weight.abs().amax(1, keepdim=True) / 255).all()


# -- DoReFa activations ----------------------------------------------------------------------------
def test_dorefa_activation_reference_case():
    q = make_quantizer("dorefa", "act", 2, signed=False, dorefa_act_range=1.0)
    x = torch.tensor([-0.5, 0.1, 0.45, 0.8, 1.7], requires_grad=True)
    y = q(x)
    y.sum().backward()
    assert close(y, [0, 0, 1 / 3, 2 / 3, 1])
    assert close(x.grad, [0, 1, 1, 1, 0])
    assert q.scale.item() == 1.0


def test_dorefa_activation_range_from_calibration_and_signed_variant():
    x = torch.tensor([-2.0, -0.5, 0.1, 0.9, 4.0])
    q = make_quantizer("dorefa", "act", 3, signed=True, act_range_rule="absmax")  # 3 steps per side on [−4, 4]
    q.start_calibration()
    q(x)
    q.finish_calibration()
    assert q.scale.item() == 4.0
    assert close(q(x), [-8 / 3, 0, 0, 4 / 3, 4])
    assert close(q.levels(), 4 / 3 * torch.arange(-3.0, 4.0))
    assert list(q.parameters()) == []  # the range is not learned


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_dorefa_activation_export_round_trip(bits, signed):
    x = torch.randn(64, generator=torch.Generator().manual_seed(bits))
    q = make_quantizer("dorefa", "act", bits, signed=signed)
    q.init_from(x[:32])
    q.initialized.fill_(True)
    e = q.export(x)
    assert torch.allclose(e.dequantize(), q(x), atol=1e-6)


# -- bit widths and integration --------------------------------------------------------------------
@pytest.mark.parametrize("method, role, bad, supported", [
    ("dorefa", "weight", 0, "1 to 16"), ("dorefa", "weight", 17, "1 to 16"),
    ("dorefa", "act", 1, "2 to 16"), ("pact", "act", 1, "2 to 16"), ("pact", "act", 17, "2 to 16"),
])
def test_unsupported_bits(method, role, bad, supported):
    with pytest.raises(ValueError, match=supported):
        make_quantizer(method, role, bad)


@pytest.mark.parametrize("method", ["pact", "dorefa"])
def test_quantized_sasrec_trains(method):
    torch.manual_seed(0)
    seqs = torch.randint(0, 21, (4, 5))
    qmodel = quantize_model(SASRec(20, 8, 1, 1, 5), method, weight_bits=4, act_bits=4, calibration=[seqs])
    out = qmodel.logits(qmodel(seqs))
    out.pow(2).mean().backward()
    assert torch.isfinite(out).all()
    assert qmodel.blocks[0].ffn.fc1.weight.grad.abs().sum() > 0
    if method == "pact":
        assert all(q.alpha.grad is not None for q in quantizers(qmodel, "act").values())


def test_dorefa_never_reports_a_clipped_weight():
    """The transform maps every weight into [0, 1]: nothing is clipped, even with an outlier or large latent
    weights (the base-class test against the level values would count the weights beyond c)."""
    torch.manual_seed(0)
    w = torch.randn(8, 64) * 0.5
    w[0, 0] = 10.0
    q = make_quantizer("dorefa", "weight", 4, axis=0, channels=8)
    q.init_from(w)
    q.initialized.fill_(True)
    assert q.clipped_fraction(w) == 0.0
    lv = q.levels()
    assert ((w < lv[:, :1]) | (w > lv[:, -1:])).float().mean().item() > 0.01  # what the level test would say


def alpha_after(steps: int, x: torch.Tensor, decay: float, sign: float = 1.0, lr: float = 1.0) -> list[float]:
    """α's trajectory when training ``sign · Σ q(x)`` with the groups QAT uses (PACT's α: SGD, momentum 0.9)."""
    from sasrec_nb.training import make_optimizers

    q = make_quantizer("pact", "act", 4, signed=False, pact_alpha_decay=decay, pact_alpha_lr=lr)
    q.alpha.data.fill_(3.0)
    q.initialized.fill_(True)
    holder = torch.nn.ModuleDict({"act": q})
    optimizers = make_optimizers(param_groups(holder, lr=1e-3, quant_lr=1e-2), 1e-3, 0.0)
    trajectory = []
    for _ in range(steps):
        for o in optimizers:
            o.zero_grad()
        (sign * q(x).sum()).backward()
        for o in optimizers:
            o.step()
        trajectory.append(q.alpha.item())
    return trajectory


def test_pact_alpha_is_trained_by_sgd_so_lambda_sets_its_decay_when_nothing_is_clipped():
    x = torch.linspace(0, 1, 100)  # far below α = 3: nothing is clipped, the only gradient is λ_α · α
    none, small, large = (alpha_after(50, x, d)[-1] for d in (0.0, 1e-4, 1e-3))
    assert none == 3.0
    assert large < small < 3.0
    assert (3.0 - large) > 5 * (3.0 - small)  # ten times the penalty: several times the pull (it compounds)


def test_pact_alpha_follows_the_clipped_gradient():
    """One SGD step: α₁ = α₀ − lr (g + λ α₀) with g = −(number of clipped values) for the loss −Σ q(x)."""
    for clipped in (5, 20):
        x = torch.cat([torch.linspace(0, 2.5, 50), torch.full((clipped,), 4.0)])
        [alpha] = alpha_after(1, x, 1e-4, sign=-1.0, lr=0.01)
        assert alpha == pytest.approx(3.0 - 0.01 * (-clipped + 1e-4 * 3.0), rel=1e-6)


def test_pact_alpha_group_is_sgd_with_its_own_rate_and_l2():
    qmodel = quantize_model(SASRec(30, 16, 2, 1, 8), "pact", pact_alpha_decay=1e-3, pact_alpha_lr=0.5)
    alphas = [g for g in param_groups(qmodel, lr=1e-3, quant_lr=1e-2) if g["name"].endswith("alpha")]
    assert alphas and all(g["optimizer"] == "sgd" and g["lr"] == 0.5 and g["momentum"] == 0.9
                          and g["weight_decay"] == 1e-3 for g in alphas)
