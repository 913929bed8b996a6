"""AdaRound: the verified cases of qat_methods.md §6, export, the frozen grid and PTQ on a tiny SASRec."""
import math

import pytest
import torch

from sasrec_nb.model import SASRec
from sasrec_nb.quant import (QuantLinear, adaround, calibrate_activations, make_quantizer, quantize_model, quantizers,
                             ranges)

ATOL = 1e-5
W_OVER_S = [0.3, 1.75, -0.6, 2.0, -1.49]




def close(a: torch.Tensor, b, atol: float = ATOL) -> bool:
    return torch.allclose(a, torch.as_tensor(b, dtype=a.dtype), atol=atol, rtol=0)


def fixed(w_over_s, step: float = 1.0):
    """A 4-bit per-tensor AdaRound quantizer on the grid ``step`` and its weight ``w_over_s · step``."""
    q = make_quantizer("adaround", "weight", 4)
    q.step.data.fill_(step)
    q.initialized.fill_(True)
    w = torch.tensor(w_over_s) * step
    q.init_rounding(w)
    return q, w


# -- the verified cases ------------------------------------------------------------------------------
def test_init_identity_h_equals_fraction():
    q, w = fixed(W_OVER_S)
    assert close(q.v, [-0.693147, 0.887303, -0.336472, -2.397895, 0.033336])
    assert close(q.h(), [0.3, 0.75, 0.4, 0.0, 0.51], atol=1e-6)
    q.rounding = "soft"
    assert close(q(w), W_OVER_S)  # ⌊W/s⌋ + frac = W/s inside the range


def test_hard_rounding_at_init_is_round_to_nearest():
    q, w = fixed(W_OVER_S)
    assert q.rounding == "hard"
    assert torch.equal(q(w), torch.tensor([0.0, 2, -1, 2, -1]))
    assert torch.equal(q.codes(w), q.nearest_codes(w))
    q.rounding = "nearest"
    assert torch.equal(q(w), torch.tensor([0.0, 2, -1, 2, -1]))


@pytest.mark.parametrize("v, expected", [(0.0, 1.0), (-10.0, 0.0), (10.0, 0.0), (None, 0.84)])
def test_regularizer_at_beta_2(v, expected):
    q, _ = fixed([0.3])  # h(V₀) = 0.3
    if v is not None:
        q.v.data.fill_(v)
    assert q.regularizer(2.0).item() == pytest.approx(expected, abs=ATOL)


def test_regularizer_sums_over_weights():
    q, _ = fixed([0.5, 0.3, 1.0])  # h = 0.5, 0.3, 0
    assert q.regularizer(2.0).item() == pytest.approx(1 + 0.84 + 0, abs=ATOL)


@pytest.mark.parametrize("kind, table", [
    ("cosine", [20, 17.364, 11, 4.636, 2.000]),
    ("linear", [20, 15.5, 11, 6.5, 2.002]),
])
def test_beta_schedule_table(kind, table):
    got = [adaround.beta_schedule(t, 10_000, warmup=0.2, start=20, end=2, kind=kind)
           for t in (2000, 4000, 6000, 8000, 9999)]
    assert got == pytest.approx(table, abs=1e-3)
    assert adaround.beta_schedule(0, 10_000, kind=kind) == 20  # β is flat (and unused) during warm-up


def test_gradient_to_v_at_init():
    q, w = fixed(W_OVER_S, step=0.1)
    q.rounding = "soft"
    q(w).sum().backward()
    assert close(q.v.grad, [0.02667, 0.02479, 0.02917, 0.00917, 0.02999])
    assert q.step.grad is None and not q.step.requires_grad  # the grid is frozen


def test_outer_clip_stops_the_gradient():
    q, w = fixed([7.6, -7.9], step=0.1)  # 4 bits: codes -8..7, 7 + h(V) clips
    q.rounding = "soft"
    q(w).sum().backward()
    assert q.v.grad[0].item() == 0.0 and q.v.grad[1].item() > 0


# -- quantizer behaviour ------------------------------------------------------------------------------
def per_channel(grid: str = "mse", seed: int = 0):
    w = torch.randn(6, 10, generator=torch.Generator().manual_seed(seed))
    q = make_quantizer("adaround", "weight", 4, axis=0, channels=6, adaround_grid=grid)
    q.init_from(w)
    q.initialized.fill_(True)
    return q, w


@pytest.mark.parametrize("mode", ["hard", "nearest", "soft"])
def test_export_round_trip(mode):
    q, w = per_channel()
    q.v.data.normal_(generator=torch.Generator().manual_seed(1))  # rounding away from nearest somewhere
    q.rounding = mode
    e = q.export(w)
    assert e.codes.dtype == torch.int8 and e.axis == 0
    assert int(e.codes.min()) >= -8 and int(e.codes.max()) <= 7
    q.rounding = "hard" if mode == "soft" else mode  # export is the hard rounding even in soft mode
    assert torch.equal(e.dequantize(), q(w))
    assert torch.equal(e.scale, q.scale)


def test_hard_rounding_moves_at_most_one_step_from_nearest():
    q, w = per_channel()
    q.v.data.normal_(std=3.0, generator=torch.Generator().manual_seed(2))
    diff = q.codes(w) - q.nearest_codes(w)
    assert diff.abs().max().item() == 1 and (diff != 0).any()
    assert close(q.levels()[:, [0, -1]], torch.stack([-8 * q.scale, 7 * q.scale], 1))


def test_grids():
    q_max, w = per_channel("max")
    assert close(q_max.scale, w.abs().amax(1) / 7)
    q_mse, _ = per_channel("mse")
    assert (q_mse.scale <= q_max.scale + 1e-7).all()

    def lp(q):
        q.rounding = "nearest"
        return (q(w) - w).abs().pow(2.4).mean(1)

    assert (lp(q_mse) <= lp(q_max) + 1e-7).all() and (lp(q_mse) < lp(q_max)).any()
    with pytest.raises(ValueError):
        make_quantizer("adaround", "weight", 4, adaround_grid="minmax")


def test_only_the_initialised_weight_can_be_rounded():
    q, w = per_channel()
    with pytest.raises(ValueError, match="only the weight"):
        q(torch.randn(6, 11))
    with pytest.raises(ValueError):
        q.rounding = "stochastic"
    with pytest.raises(RuntimeError, match="init_from"):
        make_quantizer("adaround", "weight", 4).export(w)


def test_activation_quantizer_is_fixed_abs_max():
    q = make_quantizer("adaround", "act", 8, signed=True, act_range_rule="absmax")
    q.start_calibration()
    q(torch.tensor([-2.54, 0.3, 1.0]))
    q(torch.randn(1 << 17).clamp(-2, 2))  # a large batch: the maximum of the first one must survive
    q.finish_calibration()
    assert q.scale.item() == pytest.approx(0.02, abs=1e-7) and not q.step.requires_grad
    assert close(q(torch.tensor([0.011, -3.0])), [0.02, -2.56])


# -- PTQ on a tiny SASRec -----------------------------------------------------------------------------
def tiny():
    torch.manual_seed(0)
    model = SASRec(num_items=30, embed_dim=16, num_heads=2, num_blocks=1, max_len=8).eval()
    g = torch.Generator().manual_seed(0)
    seqs = torch.randint(1, 31, (64, 8), generator=g)
    lengths = torch.randint(2, 9, (64,), generator=g)
    seqs[torch.arange(8)[None] < (8 - lengths)[:, None]] = 0  # left padding
    return model, seqs


@pytest.fixture(scope="module")
def calibrated():
    model, seqs = tiny()
    qmodel, report = adaround.calibrate(model, seqs, iters=60, lr=1e-2, snapshot_layer="blocks.0.ffn.fc1")
    return model, seqs, qmodel, report


def rounded(qmodel):
    names = [n for n, m in qmodel.named_modules() if isinstance(m, QuantLinear)] + ["item_emb"]
    return {n: (qmodel.get_submodule(n).weight_quantizer, qmodel.get_submodule(n).weight) for n in names}


def test_calibrate_reports_every_layer_in_forward_order(calibrated):
    _, _, qmodel, report = calibrated
    order = [f"blocks.0.{n}" for n in ("attn.q", "attn.k", "attn.v", "attn.out", "ffn.fc1", "ffn.fc2")]
    assert list(report["layers"]) == order + ["item_emb"]
    assert report["snapshots"]["at"] == [0.0, 0.2, 0.5, 1.0]
    assert all(h.shape == (16 * 16,) for h in report["snapshots"]["h"])
    curve = report["layers"]["blocks.0.attn.q"]["curve"]
    assert curve["step"][-1] == 59 and curve["beta"][0] == 20 and curve["beta"][-1] == pytest.approx(2, abs=0.05)
    warm = [r for s, r in zip(curve["step"], curve["reg"]) if s < 0.2 * 60]
    assert warm and all(math.isnan(r) for r in warm)  # regulariser off during warm-up: nothing drawn there
    # logged as it enters the loss, λ · Σ(1 − |2h − 1|^β) ≤ λ · (number of weights), here λ = 0.01, 16 × 16 weights
    assert 0 < curve["reg"][-1] <= 0.01 * 16 * 16


def test_calibrate_yields_hard_weights_on_the_grid(calibrated):
    _, _, qmodel, _ = calibrated
    for name, (wq, w) in rounded(qmodel).items():
        assert wq.rounding == "hard", name
        codes = wq(w) / wq.scale[:, None]
        assert close(codes, codes.round(), atol=1e-4), name
        lo, hi = wq.qrange
        assert codes.min() >= lo - 1e-4 and codes.max() <= hi + 1e-4, name
        assert (wq.codes(w) - wq.nearest_codes(w)).abs().max() <= 1, name
    assert qmodel.pos_emb.weight_quantizer.rounding == "nearest"


def test_activation_grids_come_from_fp_activations(calibrated):
    model, seqs, qmodel, _ = calibrated
    with torch.no_grad():
        hidden = model(seqs)
    rule = qmodel.head_input.range_rule  # the default, ranges.DEFAULT["adaround"], on the real positions
    expected = ranges.clip_value(hidden[seqs != 0], rule, -127, 127)
    assert qmodel.head_input.scale.item() * 127 == pytest.approx(expected.item(), rel=1e-5)
    assert not any(q.step.requires_grad for q in quantizers(qmodel, "act").values())


def test_residual_branches_get_a_grid_per_dimension_from_fp_activations(calibrated):
    """attn_out and ffn_out: one step per embedding dimension, each its own dimension's range at real positions
    (the outlier-dimension remedy); the embedding sum and the head's input keep one grid each."""
    model, seqs, qmodel, _ = calibrated
    block, seen = model.blocks[0], {}
    hooks = [getattr(block, p).register_forward_hook(lambda _m, _a, out, p=p: seen.setdefault(p, out))
             for p in ("attn_out", "ffn_out")]
    with torch.no_grad():
        model(seqs)
    for h in hooks:
        h.remove()
    for point, x in seen.items():
        q = getattr(qmodel.blocks[0], point)
        assert q.scale.shape == (16,), point
        expected = ranges.clip_values(x[seqs != 0], q.range_rule, *q.qrange, axis=-1)
        assert torch.allclose(q.scale * 127, expected, rtol=1e-5), point
        assert len(set(q.scale.tolist())) > 1, point  # really one grid per dimension
    assert qmodel.embed_out.scale.dim() == 0 and qmodel.head_input.scale.dim() == 0
    assert qmodel.quant_config["channel_points"] == ("attn_out", "ffn_out")


def test_residual_grid_per_tensor_and_bad_values():
    model, seqs = tiny()
    qmodel, report = adaround.calibrate(model, seqs[:16], iters=2, residual_grid="tensor")
    assert qmodel.blocks[0].ffn_out.scale.dim() == 0 and report["config"]["residual_grid"] == "tensor"
    with pytest.raises(ValueError, match="residual_grid must be one of channel, tensor, got 'row'"):
        adaround.calibrate(model, seqs[:16], iters=2, residual_grid="row")
    with pytest.raises(ValueError, match="'lsq' has only per-tensor activation grids"):
        quantize_model(model, "lsq", channel_points=("ffn_out",))
    with pytest.raises(ValueError, match=r"channel_points \['fc1'\] are not activation points"):
        quantize_model(model, "adaround", channel_points=("fc1",))


def test_from_state_rebuilds_the_per_dimension_grids(calibrated):
    model, seqs, qmodel, _ = calibrated
    again = adaround.from_state(model, qmodel.state_dict(), 4, 8, 8).eval()
    with torch.no_grad():
        assert torch.equal(qmodel.eval().scores(seqs), again.scores(seqs))
    with pytest.raises(ValueError, match="does not fit the model"):
        adaround.from_state(model, qmodel.state_dict(), 4, 8, 8, residual_grid="tensor")


def test_calibrate_keeps_the_grid_and_freezes_rounding(calibrated):
    model, _, qmodel, _ = calibrated
    fresh = quantize_model(model, "adaround", weight_bits=4, act_bits=8, embed_bits=8)
    for name, q in quantizers(qmodel, "weight").items():
        assert torch.equal(q.step, quantizers(fresh, "weight")[name].step), name
        assert not q.step.requires_grad and not q.v.requires_grad
    assert all(p.requires_grad for n, p in qmodel.named_parameters() if n.endswith(".weight") and "quantizer" not in n)


def test_adaround_reconstructs_better_than_nearest(calibrated):
    _, _, _, report = calibrated
    layers = report["layers"].values()
    nearest = sum(r["mse_nearest"] for r in layers)
    ada = sum(r["mse_adaround"] for r in layers)
    assert ada <= nearest * (1 + 1e-4)
    assert ada < nearest  # some rounding did change, for the better
    assert any(r["changed_fraction"] > 0 for r in layers)
    assert all(r["mse_soft"] == pytest.approx(r["mse_adaround"] - r["soft_hard_gap"]) for r in layers)


def test_calibrate_is_deterministic(calibrated):
    model, seqs, qmodel, report = calibrated
    again, report2 = adaround.calibrate(model, seqs, iters=60, lr=1e-2)
    for (wq, _), (wq2, _) in zip(rounded(qmodel).values(), rounded(again).values()):
        assert torch.equal(wq.v, wq2.v)
    errors = [[r["mse_adaround"] for r in rep["layers"].values()] for rep in (report, report2)]
    assert errors[0] == errors[1]
    with torch.no_grad():
        assert torch.equal(qmodel.scores(seqs), again.scores(seqs))


def test_first_layer_error_is_measured_on_quantized_inputs(calibrated):
    """Recompute blocks.0.attn.q's round-to-nearest error by hand: x̃ from the quantized embedding and
    activation quantizers (asymmetric reconstruction), real positions only, squared error summed over
    features and averaged over rows."""
    model, seqs, _, report = calibrated
    fresh = quantize_model(model, "adaround", weight_bits=4, act_bits=8, embed_bits=8)
    weights = quantizers(fresh, "weight").values()
    for q in weights:
        q.enabled = False
    calibrate_activations(fresh, [seqs])  # activation grids from FP activations
    for q in weights:
        q.enabled = True
    fresh.pos_emb.weight_quantizer.rounding = "nearest"
    layer = fresh.blocks[0].attn.q
    layer.weight_quantizer.rounding = "nearest"
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda _m, a, key=key: seen.setdefault(key, a[0]))
             for key, m in (("fp", model.blocks[0].attn.q), ("q", layer))]
    with torch.no_grad():
        model(seqs), fresh(seqs)
        real = seqs != 0
        target = model.blocks[0].attn.q(seen["fp"])[real]
        pred = layer(seen["q"])[real]
    for h in hooks:
        h.remove()
    expected = (target - pred).pow(2).sum(-1).mean().item()
    assert report["layers"]["blocks.0.attn.q"]["mse_nearest"] == pytest.approx(expected, rel=1e-4)
