"""PACT's α: its start (the range rule on the calibration sample), its learning rate (SGD, momentum 0.9) and L2
penalty λ_α, chosen on the validation split at the activation widths where clipping matters.

    python scripts/sweep_pact_alpha.py --profile quick --act-bits 2 4 8 --rule absmax mse --lr 0.1 1 30 \
        --out results/sweeps/pact_alpha_start_quick.json

Each setting fine-tunes PACT W8A<b> from the profile's FP32 checkpoint as ``snb.qat_model`` does (best-validation
epoch kept) and records the validation NDCG@10 (full ranking; the test split is never used), and per unsigned
quantizer (the FFN's ReLU output) α per epoch against the 99th / 99.9th percentile of its input and the share
clipped. ``sasrec_nb.quant.pact.ALPHA_LR`` and ``ALPHA_RULE`` record the choice: the one setting best on validation
summed over the widths swept (one rule for every width, as a run of the grid has one).
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
    parser.add_argument("--act-bits", type=int, nargs="+", default=[4])
    parser.add_argument("--rule", nargs="+", default=["absmax"], help="range rules that set α₀ (quant.ranges)")
    parser.add_argument("--lr", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    parser.add_argument("--decay", type=float, nargs="+", default=[1e-4])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    profile = get_profile(args.profile)
    split, fp32, calib = starting_point(profile)
    runs = {}
    settings = [(b, rule, lr, decay) for b in args.act_bits for rule in args.rule for lr in args.lr
                for decay in args.decay]
    for act_bits, rule, lr, decay in settings:
        qmodel = quantize_model(fp32, "pact", 8, act_bits, profile.embed_bits, pact_alpha_lr=lr,
                                pact_alpha_decay=decay, pact_alpha_rule=rule)
        history = train_qat(qmodel, split, profile, calib)
        valid = evaluate(qmodel, split.valid, profile.eval_batch_size)["full"]["ndcg@10"]
        relu = {n: {"alpha": history["quantizer_scales"][n],
                    "p99": [s["p99"] for s in st], "p999": [s["p999"] for s in st],
                    "clipped": [s["clipped"] for s in st]}
                for n, st in history["quantizer_stats"].items() if n.endswith("ffn.fc2.input_quantizer")}
        key = {"act_bits": act_bits, "pact_alpha_rule": rule, "pact_alpha_lr": lr, "pact_alpha_decay": decay}
        runs[json.dumps(key)] = {"valid_ndcg@10": valid, "best_epoch": history["best_epoch"], "relu_points": relu}
        print(f"A{act_bits}, α₀ {rule}, lr {lr:g}, λ {decay:g}: valid NDCG@10 {valid:.4f}, best epoch {history['best_epoch']}; α/α0 "
              + ", ".join(f"{r['alpha'][-1] / r['alpha'][0]:.3f}" for r in relu.values()), flush=True)

    def total(setting: tuple) -> float:  # a setting's validation NDCG@10 summed over the widths
        return sum(runs[json.dumps({"act_bits": b, "pact_alpha_rule": setting[0], "pact_alpha_lr": setting[1],
                                    "pact_alpha_decay": setting[2]})]["valid_ndcg@10"] for b in args.act_bits)

    best = max({(rule, lr, decay) for _, rule, lr, decay in settings}, key=total)
    out = {"profile": profile.name, "dataset": dataset_label(profile.dataset), "weight_bits": 8,
           "act_bits": args.act_bits, "runs": runs,
           "best_on_validation": {"pact_alpha_rule": best[0], "pact_alpha_lr": best[1], "pact_alpha_decay": best[2]},
           "machine": machine_info(torch.get_num_threads())}
    files.write_json(Path(args.out), out)
    print("best on validation:", best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
