"""What a learned activation range does at a heavy-tailed point: PACT's α against LSQ's step, width by width.

    python scripts/probe_learned_ranges.py [--profile full] [--act-bits 4 3 2] [--seeds 42 43 44]
                                           [--out results/analysis/learned_ranges_full.json]

PACT's α learns only from the values it clips (PACT eq. 3); LSQ's step from every value's rounding error (LSQ eq. 3).
Started from the same kind of calibrated range on a point whose range a few outliers set, the two behave differently:
this probe reads, for the W8E8A<b> runs of both methods (loaded from the checkpoint cache, trained first where
missing), every activation point's range at the start and at the end of QAT (α, or LSQ's clip level step · Q_P), the
share of values the grid clips, and the share of nonzero values it rounds to zero, on the first 128 calibration
sequences (real positions only, as calibration sees them). The start is rebuilt as QAT builds it (quantize the FP32
model, calibrate on the profile's calibration sequences) and checked against the run's recorded first range. The
post-training row ``rtn_mse`` at the same widths (MSE ranges, nothing trained) is read the same way, for comparison.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sasrec_nb import files  # noqa: E402
from sasrec_nb.config import get_profile, qat_recipe  # noqa: E402
from sasrec_nb.experiments import dataset_label, ptq_model, qat_model, starting_point, weights_digest  # noqa: E402
from sasrec_nb.machine import machine_info  # noqa: E402
from sasrec_nb.quant import calibrate_activations, capture_inputs, quantize_model, quantizers  # noqa: E402
from sasrec_nb.trace import PROBE_SEQUENCES, abs_range  # noqa: E402

METHODS = ("pact", "lsq")


def clip_level(q: nn.Module) -> float:
    """The largest level of the grid: PACT's α, or LSQ's step times its largest code Q_P."""
    return q.levels().max().item()


@torch.no_grad()
def grid_use(model: nn.Module, probe: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per activation point: its clip level, the shares of its (real-position) input clipped and of its nonzero input
    rounded to 0, and |x|'s 99th / 99.9th percentile and max."""
    acts = quantizers(model, "act")
    with capture_inputs(acts) as inputs:
        model.logits(model(probe))
    real = probe != 0
    out = {}
    for name, q in acts.items():
        x = inputs[name][real]
        nonzero = x != 0
        out[name] = {"clip_level": clip_level(q), "clipped": q.clipped_fraction(x),
                     "rounded_to_zero": (q(x)[nonzero] == 0).float().mean().item(), **abs_range(x)}
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--act-bits", type=int, nargs="+", default=[4, 3, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the profile's own seed")
    parser.add_argument("--out", default=None, help="default: results/analysis/learned_ranges_<profile>.json")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    seeds = args.seeds or [profile.seed]
    _, fp32, calib = starting_point(profile)
    probe = calib[:PROBE_SEQUENCES]  # the sequences a run's trace reads
    runs, post_training = [], []
    for bits in args.act_bits:
        post_training.append({"method": "rtn_mse", "weight_bits": 8, "embed_bits": profile.embed_bits,
                              "act_bits": bits, "points": grid_use(ptq_model(profile, "rtn_mse", 8, bits)[0], probe)})
        for method in METHODS:
            start = quantize_model(fp32, method, 8, bits, profile.embed_bits)
            calibrate_activations(start, calib.split(256))
            before = grid_use(start.eval(), probe)
            for seed in seeds:
                model, history = qat_model(profile, method, 8, bits, seed=seed)
                recorded = history["quantizer_scales"]
                for name, q in quantizers(start, "act").items():  # the start rebuilt is the run's start
                    if not math.isclose(recorded[name][0], q.scale.float().mean().item(), rel_tol=1e-4):
                        raise ValueError(f"{method} W8A{bits} seed {seed}: the cached run started {name} at "
                                         f"{recorded[name][0]:.6g}, a fresh calibration at "
                                         f"{q.scale.float().mean().item():.6g}; retrain it (python -m "
                                         "sasrec_nb.train --method ... --force) before probing")
                after = grid_use(model, probe)
                runs.append({"method": method, "weight_bits": 8, "embed_bits": profile.embed_bits, "act_bits": bits,
                             "seed": seed, "qat_lr": qat_recipe(profile, 8).qat_lr, "epochs": history["epochs"],
                             "points": {n: {"start": before[n], "end": after[n]} for n in after}})
                print(f"{method} W8E{profile.embed_bits}A{bits} seed {seed}: done", flush=True)
    out = Path(args.out or ROOT / "results" / "analysis" / f"learned_ranges_{profile.name}.json")
    files.write_json(out, {
        "profile": profile.name, "dataset": dataset_label(profile.dataset),
        "fp32_digest": weights_digest(fp32.state_dict()), "probe_sequences": len(probe), "runs": runs,
        "post_training": post_training,
        **machine_info(),
        "command": "python scripts/probe_learned_ranges.py " + " ".join(argv),
    })
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
