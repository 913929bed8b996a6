"""Choose each fixed-grid method's activation range rule (abs-max, percentile, MSE) on the validation split.

    python scripts/choose_range_rule.py --profile full --out results/analysis/range_rules_full.json

DoReFa (adapted here, notebook 06) and AdaRound (notebook 08) keep every activation grid where calibration puts
it. For each method and rule (:mod:`sasrec_nb.quant.ranges`) this builds the W8A8 model from the profile's FP32
checkpoint as the method does before any training (DoReFa: quantize and calibrate, the grid its QAT keeps;
AdaRound: its whole post-training procedure) and scores it on the **validation** users, full ranking: the test
split is never looked at. AdaRound's residual branches have one grid per embedding dimension
(``adaround.RESIDUAL_GRID``); with the chosen rule the script also scores them per tensor. The JSON holds every
score, the rule with the best validation NDCG@10 per method (``best``) and its paired difference, user by user,
to the rule in use (``sasrec_nb.quant.ranges.DEFAULT``) with a 95 % interval. A rule replaces the one in use only
when that interval lies above zero (``chosen``): a lead within the noise of the validation users does not justify
redoing every run that uses the rule. Also each activation point's range c under each rule (from the DoReFa
models), and for the point with the heaviest tail (largest abs-max over 99.99th percentile) a histogram of |x| at
real positions, for the notebooks' picture; the FP32 weights' digest, the machine and the command.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sasrec_nb import files, metrics  # noqa: E402
from sasrec_nb.config import get_profile  # noqa: E402
from sasrec_nb.experiments import dataset_label, starting_point, weights_digest  # noqa: E402
from sasrec_nb.machine import machine_info  # noqa: E402
from sasrec_nb.quant import adaround, calibrate_activations, capture_inputs, quantize_model, quantizers  # noqa: E402
from sasrec_nb.quant.ranges import DEFAULT, RULES  # noqa: E402
from sasrec_nb.training import evaluate  # noqa: E402

METHODS = ("dorefa", "adaround")


def build(method: str, rule: str, fp32, calib, profile, residual_grid: str = adaround.RESIDUAL_GRID):
    if method == "adaround":
        model, _ = adaround.calibrate(fp32, calib, weight_bits=8, act_bits=8, embed_bits=profile.embed_bits,
                                      iters=profile.adaround_iters, lr=profile.adaround_lr, seed=profile.seed,
                                      act_range_rule=rule, residual_grid=residual_grid)
        return model
    model = quantize_model(fp32, method, 8, 8, profile.embed_bits, act_range_rule=rule)
    calibrate_activations(model, calib.split(256))
    return model


@torch.no_grad()
def tail_histogram(model, point: str, seqs: torch.Tensor, bins: int = 60) -> dict:
    """|x| of ``point`` at real positions of ``seqs`` (activation quantizers off): log-spaced bin edges and counts."""
    acts = quantizers(model, "act")
    for q in acts.values():
        q.enabled = False
    with capture_inputs({point: acts[point]}) as seen:
        model.logits(model(seqs))
    for q in acts.values():
        q.enabled = True
    a = seen[point][seqs != 0].abs().flatten()
    edges = torch.logspace(-4, float(torch.log10(a.max())) + 0.01, bins + 1)
    counts = torch.histc(torch.log10(a.clamp_min(1e-4)), bins, -4, float(torch.log10(a.max())) + 0.01)
    return {"point": point, "edges": edges.tolist(), "counts": counts.tolist(), "n": len(a)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    profile = get_profile(args.profile)
    split, fp32, calib = starting_point(profile)
    fp32_valid = evaluate(fp32, split.valid, profile.eval_batch_size)["full"]["ndcg@10"]
    scores: dict[str, dict[str, float]] = {}
    per_user: dict[str, dict[str, torch.Tensor]] = {}
    clip: dict[str, dict[str, float]] = {}
    for method in METHODS:
        scores[method], per_user[method] = {}, {}
        for rule in RULES:
            started = time.perf_counter()
            model = build(method, rule, fp32, calib, profile)
            if method == "dorefa":  # its scale is the range c itself
                clip[rule] = {n: q.scale.item() for n, q in quantizers(model, "act").items()}
                if rule == "absmax":
                    absmax_model = model
            valid = evaluate(model, split.valid, profile.eval_batch_size, per_user=True)
            ndcg = valid["full"]["ndcg@10"]
            scores[method][rule] = ndcg
            per_user[method][rule] = valid["per_user_ndcg@10"]["full"]
            print(f"{method:9s} {rule:10s} valid NDCG@10 {ndcg:.4f} ({100 * ndcg / fp32_valid:.1f} % of FP32)"
                  f"  {time.perf_counter() - started:.0f} s", flush=True)
    best = {m: max(s, key=s.get) for m, s in scores.items()}
    lead = {m: metrics.paired_difference(per_user[m][DEFAULT[m]], per_user[m][best[m]]) for m in METHODS}
    chosen = {m: best[m] if lead[m]["ci95_low"] > 0 else DEFAULT[m] for m in METHODS}
    residual = {adaround.RESIDUAL_GRID: scores["adaround"][chosen["adaround"]]}
    for grid in adaround.RESIDUAL_GRIDS:
        if grid not in residual:
            model = build("adaround", chosen["adaround"], fp32, calib, profile, residual_grid=grid)
            residual[grid] = evaluate(model, split.valid, profile.eval_batch_size)["full"]["ndcg@10"]
            print(f"adaround  {chosen['adaround']:10s} residual branches per {grid}: valid NDCG@10 "
                  f"{residual[grid]:.4f} ({100 * residual[grid] / fp32_valid:.1f} % of FP32)", flush=True)
    heaviest = max(clip["absmax"], key=lambda n: clip["absmax"][n] / clip["percentile"][n])
    out = {
        "what": "validation NDCG@10 (full ranking) of W8A8 models whose activation grids are fixed by each range "
                "rule, before any training (DoReFa: quantize + calibrate; AdaRound: its post-training procedure)",
        "profile": profile.name, "dataset": dataset_label(profile.dataset),
        "fp32_digest": weights_digest(fp32.state_dict()), "n_users": len(split.valid),
        "fp32_valid_ndcg@10": fp32_valid, "valid_ndcg@10": scores,
        "best": best, "in_use": {m: DEFAULT[m] for m in METHODS}, "best_minus_in_use": lead, "chosen": chosen,
        "adaround_residual_grid": {"rule": chosen["adaround"], "default": adaround.RESIDUAL_GRID,
                                   "valid_ndcg@10": residual},
        "range_c": clip,
        "heaviest_tail": tail_histogram(absmax_model, heaviest, calib[:256]),
        "machine": machine_info(torch.get_num_threads()),
    }
    files.write_json(Path(args.out), out)
    print("chosen:", out["chosen"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
