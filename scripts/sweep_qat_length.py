"""How long QAT should run, and at which rate, chosen on the validation split at low bits.

    python scripts/sweep_qat_length.py --profile quick --out results/sweeps/qat_length_quick.json

At 8 bits the kept (best-validation) QAT epoch is often the first or second; at low bits the runs may still be
improving when the budget ends. For each method, setting (weights and tables at ``--bits``, activations at 8; the
tables at ``--embed-bits`` instead, to tell the weights' share of the loss from the tables') and (epochs, learning
rate, training windows) this fine-tunes from the profile's FP32 checkpoint as ``snb.qat_model`` does (cosine
decay over the whole run, best-validation epoch kept) and records validation NDCG@10 per epoch (full ranking; the
test split is never used). The JSON holds every curve, the pair with the best mean validation over the methods, and
the machine; ``sasrec_nb.config`` states the choice.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from itertools import product
from statistics import mean
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sasrec_nb import files  # noqa: E402
from sasrec_nb.config import get_profile  # noqa: E402
from sasrec_nb.experiments import dataset_label, starting_point, train_qat, weights_digest  # noqa: E402
from sasrec_nb.machine import machine_info  # noqa: E402
from sasrec_nb.quant import quantize_model  # noqa: E402
from sasrec_nb.training import evaluate  # noqa: E402


def label(epochs: int, lr: float, windows: str, distill: float, profile) -> str:
    """The key of one (length, rate, windows, distillation) setting; the profile's own windows and distillation
    are left out of it."""
    return (f"{epochs} epochs, lr {lr:g}" + ("" if windows == profile.qat_windows else f", {windows} windows")
            + ("" if distill == profile.qat_distill else f", distillation {distill:g}"))


def earlier_runs(path: Path, profile, digest: str, fp32_valid: float) -> list[dict]:
    """The runs of an earlier sweep at ``path``, refused unless it was made on the same profile and FP32 weights
    (a sweep written before the digest was recorded is matched by its FP32 model's validation NDCG@10, which the
    same weights reproduce exactly)."""
    if not path.exists():
        return []
    earlier = files.read_json(path)
    same = earlier.get("fp32_digest") == digest if "fp32_digest" in earlier \
        else earlier.get("fp32_valid_ndcg@10") == fp32_valid
    if earlier.get("profile") != profile.name or not same:
        raise SystemExit(f"error: {path} was made on profile {earlier.get('profile')!r} from FP32 weights "
                         f"{earlier.get('fp32_digest')!r}, not {profile.name!r} / {digest!r}: write to another --out")
    return [{"distill": 0.0, **run} for run in earlier["runs"]]  # runs from before distillation had none


RECIPE = ("epochs", "qat_lr", "windows", "distill")
CASE = ("method", "bits", "embed_bits")


def mean_best_by_setting(runs: list[dict], profile) -> dict[str, float]:
    """Each (length, rate, windows, distillation) setting's best validation NDCG@10, averaged over the (method, bit
    widths) cases that *every* setting ran, so that a setting added later for fewer methods (``--append``) is not
    compared on another set of cases. A case that only some settings ran is left out of every mean."""
    def recipe(run: dict) -> tuple:
        return tuple(run[k] for k in RECIPE)

    def case(run: dict) -> tuple:
        return tuple(run.get(k) for k in CASE)  # sweeps from before table bits were recorded have no embed_bits

    recipes = sorted({recipe(r) for r in runs})
    cases = set.intersection(*({case(r) for r in runs if recipe(r) == s} for s in recipes))
    if not cases:
        raise SystemExit("error: no (method, bits) case ran under every setting: the settings cannot be compared; "
                         "run the missing ones with --append")
    return {label(*s, profile): mean(max(r["valid_ndcg@10"]) for r in runs if recipe(r) == s and case(r) in cases)
            for s in recipes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--methods", nargs="+", default=["lsq", "pact", "ste"])
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 4], help="weights and tables (activations 8)")
    parser.add_argument("--embed-bits", type=int, default=None,
                        help="tables at this width instead of --bits (to tell the weights' loss from the tables')")
    parser.add_argument("--windows", nargs="+", default=None, choices=("last", "all"),
                        help="training windows QAT fine-tunes on (default: the profile's qat_windows)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--lr", type=float, nargs="+", default=None, help="QAT learning rates (default: profile's)")
    parser.add_argument("--distill", type=float, nargs="+", default=None,
                        help="weights α of distillation from the FP32 model (default: the profile's qat_distill)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--append", action="store_true",
                        help="keep the runs already in --out (same profile and FP32 model) and add these")
    args = parser.parse_args()
    base = get_profile(args.profile)
    rates = args.lr or [base.qat_lr]
    windows = args.windows or [base.qat_windows]
    distill = args.distill or [base.qat_distill]
    split, fp32, calib = starting_point(base)
    digest = weights_digest(fp32.state_dict())
    fp32_valid = evaluate(fp32, split.valid, base.eval_batch_size)["full"]["ndcg@10"]
    runs = earlier_runs(Path(args.out), base, digest, fp32_valid) if args.append else []
    for bits in args.bits:
        table = bits if args.embed_bits is None else args.embed_bits
        profile = replace(base, embed_bits=table)
        for method, epochs, lr, window, alpha in product(args.methods, args.epochs, rates, windows, distill):
            started = time.perf_counter()
            qmodel = quantize_model(fp32, method, bits, 8, table)
            history = train_qat(qmodel, split, replace(profile, qat_epochs=epochs, qat_lr=lr, qat_windows=window,
                                                       qat_distill=alpha), calib, fp32)
            curve = [e["ndcg@10"] for e in history["epochs"]]
            runs.append({"method": method, "bits": bits, "embed_bits": table, "epochs": epochs, "qat_lr": lr,
                         "windows": window, "distill": alpha, "valid_ndcg@10": curve,
                         "best_epoch": history["best_epoch"], "seconds": round(time.perf_counter() - started, 1)})
            print(f"{method} W{bits}E{table}A8, {epochs} epochs at {lr:g} on {window} windows, distillation "
                  f"{alpha:g}: best valid {max(curve):.4f} at epoch {history['best_epoch']}", flush=True)
    mean_best = mean_best_by_setting(runs, base)
    out = {"what": "validation NDCG@10 per QAT epoch, by method, bit width, QAT length and rate",
           "profile": base.name, "dataset": dataset_label(base.dataset), "fp32_digest": digest,
           "fp32_valid_ndcg@10": fp32_valid, "runs": runs,
           "mean_best_valid_ndcg@10": mean_best, "best_on_validation": max(mean_best, key=mean_best.get),
           "machine": machine_info(torch.get_num_threads())}
    files.write_json(Path(args.out), out)
    print("best on validation:", out["best_on_validation"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
