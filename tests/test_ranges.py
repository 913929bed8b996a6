"""Range-setting rules for fixed grids (abs-max, percentile, MSE), and the quantizers that use them."""
import pytest
import torch

from sasrec_nb.model import SASRec
from sasrec_nb.quant import make_quantizer, quantize_model, quantizers
from sasrec_nb.quant.ranges import CANDIDATES, RULES, clip_value, clip_values


def heavy_tailed(n: int = 20_000) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(n)
    x[:5] = torch.tensor([60.0, -55.0, 40.0, 30.0, -25.0])  # a few values far beyond the bulk
    return x


def test_absmax_is_the_largest_magnitude():
    x = heavy_tailed()
    assert clip_value(x, "absmax", -128, 127).item() == 60.0


def test_percentile_is_the_99_99th_percentile_of_the_magnitudes():
    x = heavy_tailed()
    assert clip_value(x, "percentile", -128, 127).item() == pytest.approx(x.abs().quantile(0.9999).item())


def test_mse_minimises_the_quantization_error_over_its_candidates():
    x = heavy_tailed()
    c = clip_value(x, "mse", -128, 127)

    def err(c):
        s = c / 127
        return (torch.clamp(torch.round(x / s), -128, 127) * s - x).pow(2).mean().item()

    candidates = [60.0 * k / CANDIDATES for k in range(1, CANDIDATES + 1)]
    assert err(c.item()) == pytest.approx(min(err(v) for v in candidates), rel=1e-6)
    assert c.item() < 60.0 and err(c.item()) < err(60.0)  # clipping some of the tail beats keeping all of it


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown range rule 'p99'"):
        make_quantizer("dorefa", "act", 8, act_range_rule="p99")


@pytest.mark.parametrize("method", ["dorefa", "adaround"])
@pytest.mark.parametrize("rule", ["absmax", "percentile", "mse"])
def test_fixed_grids_are_calibrated_by_their_rule(method, rule):
    """Each activation grid spans what the rule says for the values its point saw (real positions)."""
    torch.manual_seed(0)
    model = SASRec(30, 16, 2, 1, 8).eval()
    batch = torch.randint(1, 31, (64, 8))
    qmodel = quantize_model(model, method, 8, 8, calibration=[batch], act_range_rule=rule)
    acts = quantizers(qmodel, "act")
    seen = {}
    hooks = [q.register_forward_hook(lambda m, i, o, n=n: seen.setdefault(n, i[0])) for n, q in acts.items()]
    for q in acts.values():
        q.enabled = False
    with torch.no_grad():
        qmodel.logits(qmodel(batch))
    for h in hooks:
        h.remove()
    for name, q in acts.items():
        assert q.range_rule == rule
        c = q.scale.item() * (1 if method == "dorefa" else q.qrange[1])  # DoReFa's scale is c itself
        expected = clip_value(seen[name], rule, *q.qrange).item()
        assert c == pytest.approx(expected, rel=1e-5 if rule != "percentile" else 2e-2), name


@pytest.mark.parametrize("rule", RULES)
def test_per_channel_ranges_are_each_channels_own(rule):
    torch.manual_seed(0)
    w = torch.randn(5, 40) * torch.tensor([0.1, 1.0, 3.0, 0.5, 2.0])[:, None]
    w[2, 7] = 30.0  # one row with an outlier
    per_row = clip_values(w, rule, -8, 7, axis=0)
    assert torch.allclose(per_row, torch.stack([clip_value(r, rule, -8, 7) for r in w]), rtol=1e-6)
    assert torch.allclose(clip_values(w.T, rule, -8, 7, axis=1), per_row, rtol=1e-6)


def test_an_mse_grid_rounds_weights_more_closely_than_abs_max_at_low_bits():
    from sasrec_nb.quant.ste import weight_quantizer

    torch.manual_seed(0)
    w = torch.randn(16, 64)
    w[:, 0] = 6.0  # every row has an outlier: abs-max spends the 2-bit grid on it
    errors = {}
    for rule in ("absmax", "mse"):
        q = weight_quantizer(2, axis=0, channels=16, range_rule=rule)
        q.init_from(w)
        errors[rule] = (q(w) - w).pow(2).mean().item()
    assert errors["mse"] < 0.7 * errors["absmax"], errors
    with pytest.raises(ValueError, match="unknown range rule 'max'"):
        weight_quantizer(2, axis=0, channels=16, range_rule="max")
