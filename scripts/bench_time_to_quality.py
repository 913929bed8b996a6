"""Wall time for the FP32 SASRec to reach the reference port's 200-epoch quality (issue: speed target).

    python scripts/bench_time_to_quality.py [--profile full] [--out results/bench/time_to_quality.json]

Trains the profile's FP32 model from scratch, validating every epoch, and records when the *test*
metrics first reach the reference points measured with the reference PyTorch port of SASRec
(binary cross-entropy, the paper's settings, 200 epochs) on the ML-1M stand-in: sampled-100
NDCG@10 ≥ 0.619 and full-ranking NDCG@10 ≥ 0.134. Evaluation time is excluded from the training
clock and reported separately. Writes JSON with the machine, threads and command.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sasrec_nb import files  # noqa: E402

from sasrec_nb.config import get_profile  # noqa: E402
from sasrec_nb.experiments import dataset_label, load_split, new_model  # noqa: E402
from sasrec_nb.machine import machine_info  # noqa: E402
from sasrec_nb.training import evaluate, fit  # noqa: E402

REFERENCE = {"sampled100": 0.619, "full": 0.134}


class Reached(Exception):
    """Raised from the epoch callback once both reference points are met: training stops there."""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=60)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench" / "time_to_quality.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile, epochs=args.max_epochs, progress=False)
    split = load_split(profile)
    model = new_model(profile, split)
    log, reached = [], None
    clock = {"train": 0.0, "eval": 0.0, "last": time.perf_counter()}

    def on_epoch(epoch: int, m: torch.nn.Module) -> None:
        nonlocal reached
        clock["train"] += time.perf_counter() - clock["last"]
        t0 = time.perf_counter()
        test = evaluate(m, split.test, profile.eval_batch_size)
        clock["eval"] += time.perf_counter() - t0
        row = {"epoch": epoch, "train_seconds": round(clock["train"], 1),
               "full_ndcg@10": round(test["full"]["ndcg@10"], 4),
               "sampled100_ndcg@10": round(test["sampled100"]["ndcg@10"], 4)}
        log.append(row)
        print(row, flush=True)
        if all(test[p]["ndcg@10"] >= v for p, v in REFERENCE.items()):
            reached = row
            raise Reached
        clock["last"] = time.perf_counter()

    try:
        fit(model, split, profile, eval_every=10**6, patience=10**6, on_epoch=on_epoch)
    except Reached:
        pass
    out = {
        "what": "seconds of FP32 training until the test metrics first reach the reference port's 200-epoch quality",
        "reference": REFERENCE, "reached": reached, "epochs": log,
        "dataset": dataset_label(profile.dataset), "profile": profile.name,
        "machine": machine_info(args.threads),
        "command": "python scripts/bench_time_to_quality.py " + " ".join(argv),
        "note": "the training clock excludes the per-epoch test evaluation, which only serves this measurement",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    files.write_json(Path(args.out), out)
    print("reached:", reached)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
