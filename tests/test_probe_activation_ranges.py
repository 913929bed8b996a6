"""scripts/probe_activation_ranges.py: its range statistics and the partly quantized models it compares."""
import importlib.util
from pathlib import Path

import torch

from sasrec_nb.model import SASRec
from sasrec_nb.quant import quantizers

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("probe", ROOT / "scripts" / "probe_activation_ranges.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def tiny():
    torch.manual_seed(0)
    model = SASRec(30, 16, 2, 1, 8).eval()
    seqs = torch.randint(1, 31, (12, 8))
    seqs[:4, :3] = 0  # some padding
    return model, seqs


def test_act_only_quantizes_activations_on_fixed_grids_by_rule():
    model, seqs = tiny()
    q = probe.act_only(model, seqs)
    assert all(not wq.enabled for wq in quantizers(q, "weight").values())
    acts = quantizers(q, "act")
    assert all(a.enabled for a in acts.values())
    with torch.no_grad():
        assert not torch.allclose(q(seqs), model(seqs))
    for rule in ("percentile", "mse"):
        ruled = quantizers(probe.act_only(model, seqs, rule), "act")
        assert all(r.range_rule == rule and r.scale.item() <= a.scale.item() * (1 + 1e-6)
                   for r, a in zip(ruled.values(), acts.values()))  # never beyond the abs-max grid
    per_dim = quantizers(probe.act_only(model, seqs, "percentile", channel_points=("ffn_out",)), "act")
    assert per_dim["blocks.0.ffn_out"].scale.shape == (16,) and per_dim["blocks.0.attn_out"].scale.dim() == 0
    name = next(iter(acts))
    kept = quantizers(probe.act_only(model, seqs, keep_fp32=name), "act")
    assert not kept[name].enabled and sum(a.enabled for a in kept.values()) == len(acts) - 1


def test_weights_only_leaves_activations_in_fp32():
    model, seqs = tiny()
    q = probe.weights_only(model, seqs)
    assert all(not a.enabled for a in quantizers(q, "act").values())
    assert all(w.enabled for w in quantizers(q, "weight").values())


def test_act_only_at_other_bits_quantizes_one_point_or_all_but_one():
    model, seqs = tiny()
    acts = quantizers(probe.act_only(model, seqs, "mse", bits=4), "act")
    assert all(a.bits == 4 and a.enabled for a in acts.values())
    name = next(iter(acts))
    only = quantizers(probe.act_only(model, seqs, "mse", bits=4, only=name), "act")
    assert [n for n, a in only.items() if a.enabled] == [name]
    but = quantizers(probe.act_only(model, seqs, "mse", bits=4, keep_fp32=name), "act")
    assert [n for n, a in but.items() if not a.enabled] == [name]
    assert all(w.bits == 4 for w in quantizers(probe.weights_only(model, seqs, 4), "weight").values())
