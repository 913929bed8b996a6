"""How long QAT should run, and at which rate, chosen on the validation split at low bits.

    python scripts/sweep_qat_length.py --profile quick --out results/sweeps/qat_length_quick.json

At 8 bits the kept (best-validation) QAT epoch is often the first or second; at low bits the runs may still be
improving when the budget ends. For each method, setting (weights and tables at ``--bits``, activations at 8) and
(epochs, learning rate) pair this fine-tunes from the profile's FP32 checkpoint as ``snb.qat_model`` does (cosine
decay over the whole run, best-validation epoch kept) and records validation NDCG@10 per epoch (full ranking; the
test split is never used). The JSON holds every curve, the pair with the best mean validation over the methods, and
the machine; ``sasrec_nb.config`` states the choice.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sasrec_nb import files  # noqa: E402
from sasrec_nb.config import get_profile  # noqa: E402
from sasrec_nb.experiments import dataset_label, starting_point, train_qat  # noqa: E402
from sasrec_nb.machine import machine_info  # noqa: E402
from sasrec_nb.quant import quantize_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--methods", nargs="+", default=["lsq", "pact", "ste"])
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 4], help="weights and tables (activations 8)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--lr", type=float, nargs="+", default=None, help="QAT learning rates (default: profile's)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    base = get_profile(args.profile)
    rates = args.lr or [base.qat_lr]
    split, fp32, calib = starting_point(base)
    runs = []
    for bits in args.bits:
        profile = replace(base, embed_bits=bits)
        for method in args.methods:
            for epochs in args.epochs:
                for lr in rates:
                    started = time.perf_counter()
                    qmodel = quantize_model(fp32, method, bits, 8, bits)
                    history = train_qat(qmodel, split, replace(profile, qat_epochs=epochs, qat_lr=lr), calib)
                    curve = [e["ndcg@10"] for e in history["epochs"]]
                    runs.append({"method": method, "bits": bits, "epochs": epochs, "qat_lr": lr,
                                 "valid_ndcg@10": curve, "best_epoch": history["best_epoch"],
                                 "seconds": round(time.perf_counter() - started, 1)})
                    print(f"{method} W{bits}E{bits}A8, {epochs} epochs at {lr:g}: best valid {max(curve):.4f} at "
                          f"epoch {history['best_epoch']}", flush=True)
    pairs = sorted({(r["epochs"], r["qat_lr"]) for r in runs})
    mean_best = {f"{e} epochs, lr {lr:g}": sum(max(r["valid_ndcg@10"]) for r in runs
                                               if (r["epochs"], r["qat_lr"]) == (e, lr)) /
                 sum(1 for r in runs if (r["epochs"], r["qat_lr"]) == (e, lr)) for e, lr in pairs}
    out = {"what": "validation NDCG@10 per QAT epoch, by method, bit width, QAT length and rate",
           "profile": base.name, "dataset": dataset_label(base.dataset), "runs": runs,
           "mean_best_valid_ndcg@10": mean_best, "best_on_validation": max(mean_best, key=mean_best.get),
           "machine": machine_info(torch.get_num_threads())}
    files.write_json(Path(args.out), out)
    print("best on validation:", out["best_on_validation"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
