"""What a fixed activation grid costs the FP32 model, by range rule, and at which quantization point.

    python scripts/probe_activation_ranges.py [--profile full] [--out results/analysis/activation_ranges_full.json]

DoReFa (as adapted here) and AdaRound keep every activation grid where calibration put it, with a range set by a
rule (abs-max, percentile or MSE: ``sasrec_nb.quant.ranges``). The other four methods start from a calibrated grid
and then learn the range. This probe measures, on the profile's FP32 checkpoint:

* per quantization point: the 99th and 99.9th percentile and the max of |x| over the real positions of the
  calibration sequences (calibration, too, sees real positions only), and the 8-bit step of an abs-max grid; at the
  residual branches (attn_out, ffn_out) also the max of each embedding dimension (``dim_max``: outlier dimensions);
* test metrics (both protocols) of the FP32 model with only its activations on fixed 8-bit grids (weights FP32)
  set by each rule, with the heaviest-tailed point (largest max / 99th percentile) left in FP32 under abs-max, with
  the residual branches on a grid per dimension (percentile, as AdaRound's default), and with only its weights at
  8 bits (per-row abs-max, round to nearest: where STE starts).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sasrec_nb import files  # noqa: E402

from sasrec_nb.config import get_profile  # noqa: E402
from sasrec_nb.experiments import dataset_label, starting_point, weights_digest  # noqa: E402
from sasrec_nb.trace import abs_range  # noqa: E402
from sasrec_nb.machine import machine_info  # noqa: E402
from sasrec_nb.quant import calibrate_activations, capture_inputs, quantize_model, quantizers  # noqa: E402
from sasrec_nb.quant.apply import RESIDUAL_POINTS  # noqa: E402
from sasrec_nb.training import evaluate  # noqa: E402

BITS = 8


def act_only(fp32: torch.nn.Module, calib: torch.Tensor, rule: str = "absmax", keep_fp32: str | None = None,
             channel_points: tuple[str, ...] = ()) -> torch.nn.Module:
    """The FP32 model with fixed activation grids set by ``rule`` (AdaRound's fixed grids; per embedding dimension at
    ``channel_points``), weights FP32."""
    model = quantize_model(fp32, "adaround", BITS, BITS, BITS, act_range_rule=rule, channel_points=channel_points)
    for q in quantizers(model, "weight").values():
        q.enabled = False
    calibrate_activations(model, calib.split(256))
    for name, q in quantizers(model, "act").items():
        q.enabled = name != keep_fp32
    return model


def weights_only(fp32: torch.nn.Module, calib: torch.Tensor) -> torch.nn.Module:
    """The FP32 model with 8-bit per-row abs-max weights, rounded to nearest (STE's start), activations FP32."""
    model = quantize_model(fp32, "ste", BITS, BITS, BITS, calibration=calib.split(256))
    for q in quantizers(model, "act").values():
        q.enabled = False
    return model


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--out", default=None, help="default: results/analysis/activation_ranges_<profile>.json")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    split, fp32, calib = starting_point(profile)

    as_calibrated = act_only(fp32, calib)
    acts = quantizers(as_calibrated, "act")
    inputs: dict[str, list[torch.Tensor]] = {n: [] for n in acts}
    for q in acts.values():  # FP32 inputs at every point while they are captured
        q.enabled = False
    with torch.no_grad():
        for batch in calib.split(256):
            mask = batch != fp32.item_emb.padding_idx  # real positions: padding is never attended to or scored
            with capture_inputs(acts) as seen:
                as_calibrated.logits(as_calibrated(batch))
            for n, x in seen.items():
                inputs[n].append(x[mask] if x.shape[:2] == mask.shape else x.reshape(-1, x.shape[-1]))
    for q in acts.values():
        q.enabled = True
    points = {}
    for n in acts:
        points[n] = abs_range(torch.cat(inputs[n]), sample=2_000_000)
        points[n]["step_at_8_bits"] = points[n]["max"] / acts[n].qrange[1]
        if n.endswith(RESIDUAL_POINTS):
            points[n]["dim_max"] = torch.cat(inputs[n]).abs().amax(0).tolist()
    heaviest = max(points, key=lambda n: points[n]["max"] / points[n]["p99"])
    print(f"heaviest tail: {heaviest} ({points[heaviest]})", flush=True)

    fixed = f"activations only, fixed W32A{BITS}"
    models = {
        "fp32": fp32,
        f"{fixed}, abs-max": as_calibrated,
        f"{fixed}, percentile": act_only(fp32, calib, "percentile"),
        f"{fixed}, mse": act_only(fp32, calib, "mse"),
        f"{fixed}, abs-max, {heaviest} in FP32": act_only(fp32, calib, keep_fp32=heaviest),
        f"{fixed}, percentile, residual branches per dimension": act_only(fp32, calib, "percentile",
                                                                          channel_points=RESIDUAL_POINTS),
        f"weights only, per-row abs-max W{BITS}A32": weights_only(fp32, calib),
    }
    test = {}
    for name, model in models.items():
        metrics = evaluate(model, split.test, profile.eval_batch_size)
        test[name] = {p: {k: metrics[p][k] for k in ("ndcg@10", "hit@10")} for p in ("full", "sampled100")}
        print(f"{name}: full NDCG@10 {test[name]['full']['ndcg@10']:.4f}", flush=True)
    out = {
        "what": "activation ranges of the FP32 model at each quantization point, and the cost of fixed abs-max grids",
        "profile": profile.name, "dataset": dataset_label(profile.dataset),
        "fp32_digest": weights_digest(fp32.state_dict()), "bits": BITS,
        "calibration_sequences": len(calib),
        "positions": "p99, p999, max: real items only (as calibration sees them)",
        "points": points, "heaviest_tail": heaviest, "test": test,
        "machine": machine_info(torch.get_num_threads()),
        "command": "python scripts/probe_activation_ranges.py " + " ".join(argv),
    }
    path = Path(args.out or ROOT / "results" / "analysis" / f"activation_ranges_{profile.name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_json(path, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
