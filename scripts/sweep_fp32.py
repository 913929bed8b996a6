"""FP32 test quality of a profile under a few training settings and seeds (how the quick profile was chosen).

    python scripts/sweep_fp32.py [--profile quick] [--seeds 42 43 44] \
        [--setting base '{}'] [--setting lr3e-3 '{"lr": 3e-3}'] ... [--out FILE.json]

Each setting is a name and a JSON object of :class:`sasrec_nb.config.Profile` overrides; every setting is
trained from scratch with each seed (early stopping and the best validation epoch as in ``fit``) and scored
on the test users under both protocols. The JSON holds every run, the mean per setting, the machine and
the command. Wall times include validation and were taken with ``--threads`` threads.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sasrec_nb import files  # noqa: E402

from sasrec_nb.config import get_profile  # noqa: E402
from sasrec_nb.experiments import load_split, new_model  # noqa: E402
from sasrec_nb.machine import machine_info  # noqa: E402
from sasrec_nb.training import evaluate, fit  # noqa: E402

DEFAULT_SETTINGS = [
    ("profile", "{}"),
    ("port residual", '{"residual": "port"}'),
    ("last windows, lr 1e-3, 20 epochs", '{"train_windows": "last", "lr": 1e-3, "epochs": 20}'),
]
#: the settings each run records as they were resolved (the profile's defaults may change later)
RESOLVED = ("dataset", "lr", "epochs", "batch_size", "dropout", "train_windows", "lr_schedule", "embed_dim", "max_len",
            "residual")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--setting", nargs=2, action="append", metavar=("NAME", "JSON"),
                        help="a named set of profile overrides (repeatable; default: the profile, the port's "
                             "residual, the last window only with lr 1e-3 for 20 epochs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "results" / "sweeps" / "fp32_quick_residual.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = []
    for name, overrides in args.setting or DEFAULT_SETTINGS:
        for seed in args.seeds:
            profile = get_profile(args.profile, seed=seed, **json.loads(overrides))
            split = load_split(profile)
            model = new_model(profile, split)
            started = time.perf_counter()
            history = fit(model, split, profile)
            test = evaluate(model, split.test, profile.eval_batch_size)
            row = {"setting": name, "overrides": json.loads(overrides), "seed": seed,
                   "resolved": {k: getattr(profile, k) for k in RESOLVED},
                   "seconds": round(time.perf_counter() - started, 1), "best_epoch": history["best_epoch"],
                   "valid_ndcg@10": round(max(r.get("ndcg@10", 0.0) for r in history["epochs"]), 4),
                   "full_ndcg@10": round(test["full"]["ndcg@10"], 4),
                   "sampled100_ndcg@10": round(test["sampled100"]["ndcg@10"], 4)}
            runs.append(row)
            print(row, flush=True)
    means = {}
    for row in runs:
        means.setdefault(row["setting"], []).append(row)
    summary = {name: {"full_ndcg@10": round(statistics.mean(r["full_ndcg@10"] for r in rows), 4),
                      "seconds": round(statistics.mean(r["seconds"] for r in rows), 1), "seeds": len(rows)}
               for name, rows in means.items()}
    out = {"what": "FP32 test NDCG@10 (full ranking, history excluded; and sampled-100) per training setting and seed",
           "profile": args.profile, "runs": runs, "mean_per_setting": summary,
           "machine": machine_info(args.threads), "command": shlex.join(["python", "scripts/sweep_fp32.py", *argv])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    files.write_json(Path(args.out), out)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
