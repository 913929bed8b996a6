"""What a fixed activation grid costs the FP32 model, by range rule, and at which quantization point.

    python scripts/probe_activation_ranges.py [--profile full] [--out results/analysis/activation_ranges_full.json]
    python scripts/probe_activation_ranges.py --profile full --bits 4 --per-point   # where 4-bit activations cost

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

``--bits`` sets the activation (and weight-only) bit width, 8 by default. ``--per-point`` adds, for every point on an
MSE-range grid, the model with only that point quantized and the model with every point quantized but that one: which
points a low activation width costs, one at a time and in context.
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



def act_only(fp32: torch.nn.Module, calib: torch.Tensor, rule: str = "absmax", keep_fp32: str | None = None,
             channel_points: tuple[str, ...] = (), bits: int = 8, only: str | None = None) -> torch.nn.Module:
    """The FP32 model with fixed ``bits``-bit activation grids set by ``rule`` (AdaRound's fixed grids; per embedding
    dimension at ``channel_points``), weights FP32; the point ``keep_fp32`` left in FP32, or only the point ``only``
    quantized."""
    model = quantize_model(fp32, "adaround", bits, bits, bits, act_range_rule=rule, channel_points=channel_points)
    for q in quantizers(model, "weight").values():
        q.enabled = False
    calibrate_activations(model, calib.split(256))
    for name, q in quantizers(model, "act").items():
        q.enabled = name != keep_fp32 and (only is None or name == only)
    return model


def weights_only(fp32: torch.nn.Module, calib: torch.Tensor, bits: int = 8) -> torch.nn.Module:
    """The FP32 model with per-row abs-max weights, rounded to nearest (STE's start), activations FP32."""
    model = quantize_model(fp32, "ste", bits, bits, bits, calibration=calib.split(256))
    for q in quantizers(model, "act").values():
        q.enabled = False
    return model


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--bits", type=int, default=8, help="activation bits of the fixed grids (default 8)")
    parser.add_argument("--per-point", action="store_true",
                        help="also each point alone on an MSE grid, and every point but that one")
    parser.add_argument("--out", default=None,
                        help="default: results/analysis/activation_ranges_<profile>[_a<bits>].json")
    args = parser.parse_args(argv)
    bits = args.bits
    profile = get_profile(args.profile)
    split, fp32, calib = starting_point(profile)

    as_calibrated = act_only(fp32, calib, bits=bits)
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
        points[n][f"step_at_{bits}_bits"] = points[n]["max"] / acts[n].qrange[1]
        if n.endswith(RESIDUAL_POINTS):
            points[n]["dim_max"] = torch.cat(inputs[n]).abs().amax(0).tolist()
    heaviest = max(points, key=lambda n: points[n]["max"] / points[n]["p99"])
    print(f"heaviest tail: {heaviest} ({points[heaviest]})", flush=True)

    fixed = f"activations only, fixed W32A{bits}"
    models = {
        "fp32": lambda: fp32,
        f"{fixed}, abs-max": lambda: as_calibrated,
        f"{fixed}, percentile": lambda: act_only(fp32, calib, "percentile", bits=bits),
        f"{fixed}, mse": lambda: act_only(fp32, calib, "mse", bits=bits),
        f"{fixed}, abs-max, {heaviest} in FP32": lambda: act_only(fp32, calib, keep_fp32=heaviest, bits=bits),
        f"{fixed}, percentile, residual branches per dimension": lambda: act_only(
            fp32, calib, "percentile", channel_points=RESIDUAL_POINTS, bits=bits),
        f"weights only, per-row abs-max W{bits}A32": lambda: weights_only(fp32, calib, bits),
    }
    if args.per_point:
        for n in acts:
            models[f"{fixed}, mse, only {n}"] = lambda n=n: act_only(fp32, calib, "mse", bits=bits, only=n)
            models[f"{fixed}, mse, all but {n}"] = lambda n=n: act_only(fp32, calib, "mse", bits=bits, keep_fp32=n)
    test = {}
    for name, build in models.items():  # each model built when it is evaluated
        metrics = evaluate(build(), split.test, profile.eval_batch_size)
        test[name] = {p: {k: metrics[p][k] for k in ("ndcg@10", "hit@10")} for p in ("full", "sampled100")}
        print(f"{name}: full NDCG@10 {test[name]['full']['ndcg@10']:.4f}", flush=True)
    out = {
        "what": "activation ranges of the FP32 model at each quantization point, and the cost of fixed abs-max grids",
        "profile": profile.name, "dataset": dataset_label(profile.dataset),
        "fp32_digest": weights_digest(fp32.state_dict()), "bits": bits,
        "calibration_sequences": len(calib),
        "positions": "p99, p999, max: real items only (as calibration sees them)",
        "points": points, "heaviest_tail": heaviest, "test": test,
        "machine": machine_info(torch.get_num_threads()),
        "command": "python scripts/probe_activation_ranges.py " + " ".join(argv),
    }
    suffix = "" if bits == 8 else f"_a{bits}"
    path = Path(args.out or ROOT / "results" / "analysis" / f"activation_ranges_{profile.name}{suffix}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_json(path, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
