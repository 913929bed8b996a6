"""PACT's α learning rate (SGD, momentum 0.9) and L2 penalty λ_α, chosen on the validation split where clipping
matters: 4-bit activations.

    python scripts/sweep_pact_alpha.py --profile quick --out results/sweeps/pact_alpha_quick.json

Each setting fine-tunes PACT W8A4 from the profile's FP32 checkpoint as ``snb.qat_model`` does (best-validation
epoch kept) and records the validation NDCG@10 (full ranking; the test split is never used), and per unsigned
quantizer (the FFN's ReLU output) α per epoch against the 99th / 99.9th percentile of its input and the share
clipped. ``sasrec_nb.quant.pact.ALPHA_LR`` records the choice.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sasrec_nb import files  # noqa: E402
from sasrec_nb.config import get_profile  # noqa: E402
from sasrec_nb.experiments import dataset_label, starting_point, train_qat  # noqa: E402
from sasrec_nb.machine import machine_info  # noqa: E402
from sasrec_nb.quant import quantize_model  # noqa: E402
from sasrec_nb.training import evaluate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--act-bits", type=int, default=4)
    parser.add_argument("--lr", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    parser.add_argument("--decay", type=float, nargs="+", default=[1e-4])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    profile = get_profile(args.profile)
    split, fp32, calib = starting_point(profile)
    runs = {}
    for lr in args.lr:
        for decay in args.decay:
            qmodel = quantize_model(fp32, "pact", 8, args.act_bits, profile.embed_bits, pact_alpha_lr=lr,
                                    pact_alpha_decay=decay)
            history = train_qat(qmodel, split, profile, calib)
            valid = evaluate(qmodel, split.valid, profile.eval_batch_size)["full"]["ndcg@10"]
            relu = {n: {"alpha": history["quantizer_scales"][n],
                        "p99": [s["p99"] for s in st], "p999": [s["p999"] for s in st],
                        "clipped": [s["clipped"] for s in st]}
                    for n, st in history["quantizer_stats"].items() if n.endswith("ffn.fc2.input_quantizer")}
            runs[json.dumps({"pact_alpha_lr": lr, "pact_alpha_decay": decay})] = {
                "valid_ndcg@10": valid, "best_epoch": history["best_epoch"], "relu_points": relu}
            print(f"lr {lr:g}, λ {decay:g}: valid NDCG@10 {valid:.4f}, best epoch {history['best_epoch']}; α/α0 "
                  + ", ".join(f"{r['alpha'][-1] / r['alpha'][0]:.3f}" for r in relu.values()), flush=True)
    best = max(runs, key=lambda k: runs[k]["valid_ndcg@10"])
    out = {"profile": profile.name, "dataset": dataset_label(profile.dataset), "weight_bits": 8,
           "act_bits": args.act_bits, "runs": runs, "best_on_validation": json.loads(best),
           "machine": machine_info(torch.get_num_threads())}
    files.write_json(Path(args.out), out)
    print("best on validation:", best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
