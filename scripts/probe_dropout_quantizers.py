"""Does dropout in front of an activation quantizer bias what QAT learns?

    python scripts/probe_dropout_quantizers.py --profile quick --out results/analysis/dropout_quantizers_quick.json

Seven of SASRec's activation quantization points sit after a dropout (``embed_out``; per block the input of the
attention's output projection, of ``fc2`` and ``ffn_out``): while QAT trains, the entries they see are scaled by
1/(1 − p) = 1.25, and in evaluation they are not. This trains the same QAT run twice from the profile's FP32
checkpoint, as it is and with every dropout off during QAT, and records for each point the learned step against
the calibrated one, the share of its evaluation-time inputs that are clipped, and the validation NDCG@10 (the
model kept is the best-validation epoch, as always). The test split is not used.
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
from sasrec_nb.experiments import dataset_label, starting_point, train_qat  # noqa: E402
from sasrec_nb.machine import machine_info  # noqa: E402
from sasrec_nb.model import CausalSelfAttention, Dropout  # noqa: E402
from sasrec_nb.quant import quantize_model  # noqa: E402
from sasrec_nb.training import evaluate  # noqa: E402

AFTER_DROPOUT = ("embed_out", "attn.out.input_quantizer", "ffn.fc2.input_quantizer", "ffn_out")


def without_dropout(model: torch.nn.Module) -> torch.nn.Module:
    for m in model.modules():
        if isinstance(m, Dropout):
            m.p = 0.0
        elif isinstance(m, CausalSelfAttention):
            m.dropout = 0.0
    return model


def run(profile, fp32, split, calib, method: str, act_bits: int, dropout: bool) -> dict:
    qmodel = quantize_model(fp32, method, 8, act_bits, profile.embed_bits)
    if not dropout:
        without_dropout(qmodel)
    history = train_qat(qmodel, split, profile, calib)
    scales, stats = history["quantizer_scales"], history["quantizer_stats"]
    points = {n: {"step_learned_over_calibrated": scales[n][-1] / scales[n][0], "clipped_end": stats[n][-1]["clipped"]}
              for n in scales if n.endswith(AFTER_DROPOUT)}
    valid = evaluate(qmodel, split.valid, profile.eval_batch_size)["full"]["ndcg@10"]
    return {"valid_ndcg@10": valid, "best_epoch": history["best_epoch"], "points_after_dropout": points,
            "other_points_step_ratio": {n: s[-1] / s[0] for n, s in scales.items()
                                        if "weight_quantizer" not in n and not n.endswith(AFTER_DROPOUT)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--method", default="lsq")
    parser.add_argument("--act-bits", type=int, nargs="+", default=[8, 4])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    profile = get_profile(args.profile)
    split, fp32, calib = starting_point(profile)
    out = {"profile": profile.name, "dataset": dataset_label(profile.dataset), "method": args.method, "runs": {}}
    for ab in args.act_bits:
        for dropout in (True, False):
            name = f"W8A{ab}, dropout {'on' if dropout else 'off'} during QAT"
            out["runs"][name] = r = run(profile, fp32, split, calib, args.method, ab, dropout)
            ratios = [p["step_learned_over_calibrated"] for p in r["points_after_dropout"].values()]
            print(f"{name}: valid NDCG@10 {r['valid_ndcg@10']:.4f}; steps after dropout end at "
                  f"{min(ratios):.3f}-{max(ratios):.3f} of calibration", flush=True)
    out["machine"] = machine_info(torch.get_num_threads())
    files.write_json(Path(args.out), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
