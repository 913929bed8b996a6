"""The shared core, the STE baseline and LSQ: reference cases (qat_methods.md §1-2) and PyTorch's kernels."""
import math
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from sasrec_nb.model import SASRec
from sasrec_nb.quant import (METHODS, QuantEmbedding, QuantLinear, calibrate_activations, grad_scale, make_quantizer,
                             param_groups, quantize_model, quantizers, round_ste)
from sasrec_nb.quant.export import model_bytes

X = [-1.2, -0.3, 0.05, 0.26, 0.9, 2.0]


def fixed(method: str, bits: int, step: float, **kw):
    q = make_quantizer(method, "weight", bits, **kw)
    q.step.data.fill_(step)
    q.initialized.fill_(True)
    return q


def test_round_ste_and_grad_scale():
    x = torch.tensor([0.5, 1.5, 2.5, -0.4], requires_grad=True)
    y = round_ste(x)
    assert y.tolist() == [0.0, 2.0, 2.0, -0.0]  # half to even
    y.sum().backward()
    assert x.grad.tolist() == [1.0] * 4
    s = torch.tensor(3.0, requires_grad=True)
    out = grad_scale(s, 0.1)
    assert out.item() == 3.0
    out.backward()
    assert s.grad.item() == pytest.approx(0.1)


def test_ste_reference_case_and_torch_kernel():
    x = torch.tensor(X, requires_grad=True)
    q = fixed("ste", 3, 0.25)
    y = q(x)
    y.sum().backward()
    assert torch.allclose(y, torch.tensor([-1.0, -0.25, 0.0, 0.25, 0.75, 0.75]))
    assert torch.equal(y.detach(), torch.fake_quantize_per_tensor_affine(x.detach(), 0.25, 0, -4, 3))
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert q.step.grad.item() == pytest.approx(1.96, abs=1e-5)


def test_ste_gradient_matches_torch_fake_quant_mask():
    torch.manual_seed(0)
    x = (torch.randn(1000) * 2).requires_grad_()
    q = fixed("ste", 4, 0.3)
    q(x).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    torch.fake_quantize_per_tensor_affine(x2, 0.3, 0, -8, 7).sum().backward()
    assert torch.equal(x.grad, x2.grad)


def test_lsq_reference_case_and_torch_learnable_kernel():
    x = torch.tensor(X, requires_grad=True)
    q = fixed("lsq", 3, 0.25)
    y = q(x)
    y.sum().backward()
    g = 1 / math.sqrt(6 * 3)
    assert g == pytest.approx(0.235702, abs=1e-6)
    assert torch.allclose(y, torch.tensor([-1.0, -0.25, 0.0, 0.25, 0.75, 0.75]))
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert q.step.grad.item() == pytest.approx(0.461976, abs=1e-6)
    x2 = x.detach().clone().requires_grad_()
    s = torch.tensor([0.25], requires_grad=True)
    y2 = torch._fake_quantize_learnable_per_tensor_affine(x2, s, torch.tensor([0.0]), -4, 3, g)
    y2.sum().backward()
    assert torch.equal(y.detach(), y2.detach())
    assert torch.equal(x.grad, x2.grad)
    assert q.step.grad.item() == pytest.approx(s.grad.item(), abs=1e-6)


def test_lsq_per_channel_matches_torch_per_channel_kernel():
    torch.manual_seed(1)
    w = (torch.randn(5, 16) * 0.7).requires_grad_()
    q = make_quantizer("lsq", "weight", 4, axis=0, channels=5)
    q.init_from(w.detach())
    q.initialized.fill_(True)
    y = q(w)
    (y * torch.arange(16.0)).sum().backward()
    w2 = w.detach().clone().requires_grad_()
    s = q.step.detach().clone().requires_grad_()
    g = 1 / math.sqrt(16 * 7)  # N = elements per channel
    y2 = torch._fake_quantize_learnable_per_channel_affine(w2, s, torch.zeros(5), 0, -8, 7, g)
    (y2 * torch.arange(16.0)).sum().backward()
    assert torch.allclose(y, y2)
    assert torch.allclose(w.grad, w2.grad)  # (x/s)·s in float is not exactly x: equal to 1e-6
    assert torch.allclose(q.step.grad, s.grad, atol=1e-6)


def test_lsq_initialisation():
    q = make_quantizer("lsq", "weight", 3)
    q.init_from(torch.tensor(X))
    assert q.step.item() == pytest.approx(0.906440, abs=1e-6)
    w = torch.tensor([[0.1, -0.2, 0.4, -0.8], [1.0, 0.5, -0.25, 0.0]])
    qc = make_quantizer("lsq", "weight", 3, axis=0, channels=2)
    qc.init_from(w)
    assert qc.step.tolist() == pytest.approx([0.433013, 0.505181], abs=1e-6)


def test_lsq_activation_is_unsigned_after_relu():
    q = make_quantizer("lsq", "act", 4, signed=False)
    assert q.qrange == (0, 15)
    q.step.data.fill_(0.1)
    q.initialized.fill_(True)
    assert q(torch.tensor([-0.3, 0.26, 2.0])).tolist() == pytest.approx([0.0, 0.3, 1.5])


@pytest.mark.parametrize("method", ["ste", "lsq"])
def test_export_dequantizes_to_forward(method):
    torch.manual_seed(2)
    w = torch.randn(6, 10)
    q = make_quantizer(method, "weight", 4, axis=0, channels=6)
    q.init_from(w)
    q.initialized.fill_(True)
    e = q.export(w)
    assert e.codes.dtype == torch.int8 and int(e.codes.min()) >= -8 and int(e.codes.max()) <= 7
    assert torch.equal(e.dequantize(), q(w).detach())


@pytest.mark.parametrize("method", ["ste", "lsq"])
def test_sixteen_bit_quant_linear_matches_float_layer(method):
    torch.manual_seed(3)
    lin = nn.Linear(32, 16)
    model = nn.Sequential(lin)
    qmodel = quantize_model(model, method, 16, 16)
    x = torch.randn(8, 32)
    quant_lin = qmodel[0]
    assert isinstance(quant_lin, QuantLinear)
    quant_lin.input_quantizer.init_from(x)
    quant_lin.input_quantizer.initialized.fill_(True)
    ref = lin(x)
    rel = (quant_lin(x) - ref).abs().max() / ref.abs().max()
    tol = 2e-4 if method == "ste" else 5e-3  # LSQ's 2·mean/√Q_P start is coarser than abs-max
    assert rel < tol


@pytest.mark.parametrize("method", METHODS)
def test_quantize_model_reaches_every_linear_and_the_table(method):
    model = SASRec(30, 16, 2, 2, 8)
    qmodel = quantize_model(model, method, 4 if method != "dorefa" else 4, 8)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    qlinears = [n for n, m in qmodel.named_modules() if isinstance(m, QuantLinear)]
    assert linears == qlinears and len(linears) == 12
    assert isinstance(qmodel.item_emb, QuantEmbedding) and isinstance(qmodel.pos_emb, QuantEmbedding)
    assert qmodel.head_weight is qmodel.item_emb.weight_quantizer
    assert qmodel.item_emb.weight_quantizer.bits == 8 and qmodel.blocks[0].attn.q.weight_quantizer.bits == 4
    for point in ("embed_out", "head_input"):
        assert getattr(qmodel, point).method == method or method in ("pact", "adaround")
    names = quantizers(qmodel)
    assert sum("weight_quantizer" in n for n in names) == 14
    assert not any(isinstance(m, nn.Identity) for n, m in qmodel.named_modules()
                   if n.endswith(("embed_out", "attn_out", "ffn_out", "head_input")))
    assert qmodel.blocks[0].ffn.fc2.input_quantizer.signed is False
    assert qmodel.blocks[0].ffn.fc1.input_quantizer.signed is True
    seqs = torch.randint(0, 31, (4, 8))
    assert qmodel.scores(seqs).shape == (4, 31)
    assert model is not qmodel and isinstance(model.blocks[0].attn.q, nn.Linear)


@pytest.mark.parametrize("method,bad,supported", [("ste", 1, "2 to 16"), ("lsq", 17, "2 to 16"),
                                                  ("apot", 9, "2 to 8"), ("pact", 1, "2 to 16")])
def test_unsupported_bits_raise_with_the_range(method, bad, supported):
    with pytest.raises(ValueError, match=supported):
        make_quantizer(method, "act" if method == "pact" else "weight", bad)


def test_unknown_method_and_role():
    with pytest.raises(ValueError, match="choose one of"):
        make_quantizer("nope", "weight", 8)
    with pytest.raises(ValueError, match="role"):
        make_quantizer("lsq", "bias", 8)


def test_param_groups_separate_quantizer_parameters():
    qmodel = quantize_model(SASRec(30, 16, 2, 1, 8), "lsq")
    groups = param_groups(qmodel, lr=1e-3, quant_lr=1e-2)
    weights, scale_groups = groups[0], groups[1:]
    steps = {id(q.step): q.step for q in quantizers(qmodel).values()}
    assert all(id(p) not in steps for p in weights["params"])
    assert {id(g["params"][0]) for g in scale_groups} == set(steps)
    for g in scale_groups:  # a relative step: lr proportional to the parameter's size
        p = g["params"][0]
        assert g["lr"] == pytest.approx(1e-2 * p.detach().abs().mean().item()) and g["weight_decay"] == 0.0
    n_params = sum(1 for _ in qmodel.parameters())
    assert len(weights["params"]) + len(scale_groups) == n_params


def padded_batch(num_items: int = 30, length: int = 8) -> torch.Tensor:
    """Item sequences left-padded as the loaders pad them: 1 to ``length`` items each."""
    g = torch.Generator().manual_seed(1)
    seqs = torch.randint(1, num_items + 1, (64, length), generator=g)
    lengths = torch.randint(1, length + 1, (64,), generator=g)
    seqs[torch.arange(length)[None, :] < (length - lengths)[:, None]] = 0
    return seqs


def captured_at_real_positions(qmodel, batch):
    """Every activation point's input on ``batch``, at real positions (what calibration saw)."""
    acts = quantizers(qmodel, "act")
    for q in acts.values():
        q.enabled = False  # activation quantizers pass x through, weights stay quantized, as in calibration
    with torch.no_grad(), capture_all_inputs(acts) as seen:
        qmodel.logits(qmodel(batch))
    for q in acts.values():
        q.enabled = True
    real = batch != 0
    return {n: torch.cat([x[real] for x in xs]) for n, xs in seen.items()}, \
        {n: torch.cat([x.flatten() for x in xs]) for n, xs in seen.items()}


def test_calibration_initialises_every_activation_point_with_the_true_max_of_real_positions():
    """Each abs-max grid spans exactly the largest |x| its point received at real positions."""
    torch.manual_seed(0)
    model = SASRec(30, 16, 2, 1, 8).eval()
    batch = padded_batch()
    qmodel = quantize_model(model, "ste", 8, 8, calibration=[batch])
    real, _ = captured_at_real_positions(qmodel, batch)
    for name, q in quantizers(qmodel, "act").items():
        assert bool(q.initialized), name
        assert q.scale.item() == pytest.approx(real[name].abs().max().item() / q.qrange[1], rel=1e-6), name


def test_a_grid_per_dimension_sees_every_calibration_batch_at_real_positions():
    """AdaRound's residual branches: each dimension's abs-max over all batches (not the last one), padding left out."""
    torch.manual_seed(0)
    model = SASRec(30, 16, 2, 1, 8).eval()
    batches = [padded_batch(), padded_batch()[:2]]
    qmodel = quantize_model(model, "adaround", 8, 8, channel_points=("ffn_out",), act_range_rule="absmax",
                            calibration=batches)
    seen = [captured_at_real_positions(qmodel, b)[0]["blocks.0.ffn_out"] for b in batches]
    expected = torch.cat(seen).abs().amax(0)
    q = qmodel.blocks[0].ffn_out
    assert q.scale.shape == (16,) and torch.allclose(q.scale * 127, expected, rtol=1e-6)
    assert not torch.allclose(seen[-1].abs().amax(0), expected)  # the last batch alone would give other grids


def test_padding_positions_do_not_shape_a_grid():
    """LSQ's mean-based step, from real positions only; with the padding rows counted it would differ."""
    torch.manual_seed(0)
    model = SASRec(30, 16, 2, 1, 8).eval()  # a padding row is zero, and so is its LayerNorm output
    batch = padded_batch()
    qmodel = quantize_model(model, "lsq", 8, 8, calibration=[batch])
    real, everything = captured_at_real_positions(qmodel, batch)
    moved = 0
    for name, q in quantizers(qmodel, "act").items():
        expected = 2 * real[name].abs().mean().item() / math.sqrt(q.qrange[1])
        assert q.step.item() == pytest.approx(expected, rel=1e-5), name
        with_padding = 2 * everything[name].abs().mean().item() / math.sqrt(q.qrange[1])
        moved += abs(with_padding / expected - 1) > 0.05
    assert moved >= 4  # the padding rows would have moved most grids


@contextmanager
def capture_all_inputs(modules):
    seen = {n: [] for n in modules}
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: seen[n].append(i[0].detach()))
               for n, m in modules.items()]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("batches", [[], [torch.zeros(4, 8, dtype=torch.long)]], ids=["none", "only-padding"])
def test_calibration_without_items_is_refused(batches):
    qmodel = quantize_model(SASRec(30, 16, 2, 1, 8), "ste")
    with pytest.raises(ValueError, match="at least one item"):
        calibrate_activations(qmodel, batches)
    assert not any(q.calibrating or q._seen for q in quantizers(qmodel, "act").values())


def test_lsq_step_is_clamped_in_the_forward():
    """A step of 0 gives no NaN; a negative step behaves as the smallest positive one, and export agrees."""
    x = torch.tensor(X)
    for step in (0.0, -0.25):
        q = fixed("lsq", 3, step)
        y = q(x)
        assert torch.isfinite(y).all()
        assert torch.equal(y, fixed("lsq", 3, 1e-30)(x))
        assert torch.equal(q.export(x).dequantize(), y)


def test_lsq_activation_gradient_scale_uses_the_features_of_one_example():
    """g = 1/sqrt(N·Q_P) with N = x[0].numel() for activations; N = the whole batch, or g = 1, must fail."""
    torch.manual_seed(2)
    x = torch.randn(4, 3, 5) * 2
    band = ((x / 0.3 > 7) & (x / 0.3 < 7.5)) | ((x / 0.3 < -8) & (x / 0.3 > -8.5))
    x[band] = 0.0  # torch's kernel rounds then clamps, LSQ clamps then rounds: they differ only in this band
    assert (x / 0.3 > 7.5).any() and (x / 0.3 < -8.5).any()  # clipped values on both sides
    q = make_quantizer("lsq", "act", 4)
    q.step.data.fill_(0.3)
    q.initialized.fill_(True)
    q(x).sum().backward()
    s = torch.tensor([0.3], requires_grad=True)
    torch._fake_quantize_learnable_per_tensor_affine(x, s, torch.tensor([0.0]), -8, 7, 1 / math.sqrt(15 * 7)).sum() \
        .backward()
    assert q.step.grad.item() == pytest.approx(s.grad.item(), rel=1e-5)
    ungscaled = torch.tensor([0.3], requires_grad=True)
    torch._fake_quantize_learnable_per_tensor_affine(x, ungscaled, torch.tensor([0.0]), -8, 7, 1.0).sum().backward()
    assert q.step.grad.item() == pytest.approx(ungscaled.grad.item() / math.sqrt(15 * 7), rel=1e-5)
    assert q.step.grad.item() != pytest.approx(ungscaled.grad.item() / math.sqrt(60 * 7), rel=1e-2)


def test_quantizing_a_quantized_model_is_refused():
    qmodel = quantize_model(SASRec(30, 16, 2, 1, 8), "lsq")
    with pytest.raises(ValueError, match=r"already quantized \(lsq\)"):
        quantize_model(qmodel, "pact")


@pytest.mark.parametrize("call", [
    lambda: quantize_model(SASRec(30, 16, 2, 1, 8), "dorefa", dorefa_act_rnage=3.0),
    lambda: make_quantizer("dorefa", "act", 8, dorefa_act_rnage=3.0),
])
def test_a_misspelt_option_is_an_error_naming_the_valid_ones(call):
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'dorefa_act_rnage' for 'dorefa'; its options are "
                                         r"act_range_rule, dorefa_act_range, dorefa_latent_start, dorefa_rescale"):
        call()


def test_options_reach_the_role_that_takes_them():
    qmodel = quantize_model(SASRec(30, 16, 2, 1, 8), "pact", pact_alpha_decay=1e-3, dorefa_rescale=False)
    assert qmodel.embed_out.param_weight_decay == 1e-3
    assert qmodel.blocks[0].attn.q.weight_quantizer.rescale is False


@pytest.mark.parametrize("bits", [True, 8.0, "8"])
def test_bits_must_be_a_whole_number(bits):
    with pytest.raises(ValueError, match="a whole number"):
        make_quantizer("lsq", "weight", bits)


def test_model_bytes_shrink_with_bits():
    model = SASRec(200, 32, 2, 2, 16)
    fp32 = model_bytes(model)
    assert fp32 == 4 * sum(p.numel() for p in model.parameters())
    b8 = model_bytes(quantize_model(model, "lsq", 8, 8, 8))
    b4 = model_bytes(quantize_model(model, "lsq", 4, 8, 4))
    assert b4 < b8 < 0.35 * fp32


@pytest.mark.parametrize("method,x_over_s,dx,ds", [
    ("ste", 3.3, 1.0, 3 - 3.3), ("ste", -4.3, 1.0, -4 + 4.3),  # round, then clamp: round(3.3) = 3 is inside
    ("lsq", 3.3, 0.0, 3.0), ("lsq", -4.3, 0.0, -4.0),          # clamp, then round: clipped, ∂/∂s = Q_P or −Q_N
])
def test_the_clip_band_within_half_a_step_of_the_edge(method, x_over_s, dx, ds):
    """STE follows torch's fake_quantize (round then clamp), LSQ its paper (clamp then round, eq. 3): within half a
    step beyond the clip edge the two give the same value but different gradients, each by its own rule."""
    q = fixed(method, 3, 0.25)
    if method == "lsq":
        q.use_grad_scale = False  # the raw eq. 3 step gradient
    x = torch.tensor([x_over_s * 0.25], requires_grad=True)
    y = q(x)
    y.sum().backward()
    assert y.item() == pytest.approx(0.25 * max(min(round(x_over_s), 3), -4))
    assert x.grad.item() == dx
    assert q.step.grad.item() == pytest.approx(ds, abs=1e-6)
    if method == "ste":
        x2 = x.detach().clone().requires_grad_()
        torch.fake_quantize_per_tensor_affine(x2, 0.25, 0, -4, 3).sum().backward()
        assert x2.grad.item() == dx


@pytest.mark.parametrize("method", ["ste", "lsq", "pact", "dorefa", "apot", "adaround"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_the_size_is_the_packed_storage_by_the_bit_arithmetic(method, bits):
    """Codes below 8 bits are stored packed (four 2-bit or two 4-bit codes a byte, 3-bit codes across bytes); the
    size counts exactly ⌈n · bits / 8⌉ bytes per weight plus scales, level tables, offsets and the FP32 remainder,
    and the packed codes read back to the quantizer's own."""
    from sasrec_nb.quant.core import Exported
    from sasrec_nb.quant.export import export_model, packed_state, unpacked_codes

    torch.manual_seed(0)
    model = quantize_model(SASRec(200, 32, 2, 2, 16), method, bits, 8, bits)
    exported, state = export_model(model), packed_state(model)
    expected = 0
    for name, t in exported.items():
        if isinstance(t, Exported):
            assert torch.equal(unpacked_codes(state, name), t.codes.to(torch.int32)), name
            expected += (t.codes.numel() * bits + 7) // 8 + sum(
                x.numel() * x.element_size() for x in (t.scale, t.levels, t.offset) if x is not None)
        else:
            expected += t.numel() * t.element_size()
    assert model_bytes(model) == expected
    n_quantized = sum(t.codes.numel() for t in exported.values() if isinstance(t, Exported))
    assert n_quantized > 0.9 * sum(p.numel() for n, p in model.named_parameters() if "quantizer" not in n)
