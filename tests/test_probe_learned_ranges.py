"""scripts/probe_learned_ranges.py: the clip level it reads per method, and the shares of a point's input it counts."""
import importlib.util
from pathlib import Path

import pytest
import torch

from sasrec_nb.model import SASRec
from sasrec_nb.quant import calibrate_activations, capture_inputs, quantize_model, quantizers

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("learned", ROOT / "scripts" / "probe_learned_ranges.py")
learned = importlib.util.module_from_spec(spec)
spec.loader.exec_module(learned)


def calibrated(method: str, act_bits: int):
    torch.manual_seed(0)
    seqs = torch.randint(1, 31, (12, 8))
    seqs[:4, :3] = 0  # some padding
    model = quantize_model(SASRec(30, 16, 2, 1, 8), method, 8, act_bits)
    calibrate_activations(model, [seqs])
    return model.eval(), seqs


def test_clip_level_is_pacts_alpha_or_the_step_times_the_largest_code():
    pact, _ = calibrated("pact", 2)
    q = quantizers(pact, "act")["blocks.0.ffn_out"]
    assert learned.clip_level(q) == pytest.approx(q.alpha.item())
    lsq, _ = calibrated("lsq", 4)
    q = quantizers(lsq, "act")["blocks.0.ffn_out"]
    assert q.qrange[1] == 7 and learned.clip_level(q) == pytest.approx(7 * q.scale.item())
    assert max(q.levels().tolist()) == pytest.approx(learned.clip_level(q), rel=1e-6)  # the largest level


def test_grid_use_counts_clipped_and_zeroed_values_by_hand():
    model, seqs = calibrated("pact", 2)
    use = learned.grid_use(model, seqs)
    assert set(use) == set(quantizers(model, "act"))
    point = use["blocks.0.ffn_out"]
    assert 0 <= point["clipped"] <= 1 and 0 <= point["rounded_to_zero"] <= 1
    assert point["p99"] <= point["p999"] <= point["max"]
    q = quantizers(model, "act")["blocks.0.ffn_out"]
    q.alpha.data.fill_(1e4)  # a range far beyond every value: nothing clipped, every value rounds to 0
    wide = learned.grid_use(model, seqs)["blocks.0.ffn_out"]
    assert wide["clipped"] == 0 and wide["rounded_to_zero"] == 1 and wide["clip_level"] == pytest.approx(1e4)
    with capture_inputs({"p": q}) as inputs:
        model.logits(model(seqs))
    x = inputs["p"][seqs != 0]
    alpha = x.abs().median().item()  # signed 2-bit grid {-α, 0, α}: |x| < α/2 rounds to 0, |x| > α clips
    q.alpha.data.fill_(alpha)
    middle = learned.grid_use(model, seqs)["blocks.0.ffn_out"]
    nonzero = x[x != 0].abs()
    assert middle["rounded_to_zero"] == pytest.approx((nonzero < alpha / 2).float().mean().item(), abs=1e-3)
    assert middle["clipped"] == pytest.approx((x.abs() > alpha).float().mean().item(), abs=1e-3)
    assert 0.3 < middle["clipped"] < 0.7
