"""Peak memory of recommending the top-10 against a large catalogue: the whole score matrix, or item chunks.

    python scripts/bench_topk_memory.py [--items 1000000] [--batch 256] [--out results/bench/topk_memory.json]

Scoring B users against N items writes a B × N score matrix before ``topk`` (256 × 1 M float32: 1 GB). The FP32
scorer and the INT8 model can instead score chunks of items and keep a running top-10 (``recommend``,
:func:`sasrec_nb.int8.lastpos.chunked_top_k`). Each of the four paths runs in a fresh process with a random model of
the quick-profile shape: after the model is built, the process's peak resident memory is reset (Linux
``/proc/self/clear_refs``, after glibc's ``malloc_trim`` returned the memory freed while building) and the growth
of the peak while scoring is what the path itself needs. The JSON records the machine and the command.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sasrec_nb import files  # noqa: E402
from sasrec_nb.machine import machine_info  # noqa: E402

SHAPE = dict(embed_dim=128, num_heads=4, num_blocks=2, max_len=50, residual="paper")
PATHS = ("fp32_scores", "fp32_recommend", "int8_scores", "int8_recommend")
PROBE = """
import ctypes, gc, json, torch
from sasrec_nb.int8 import Int8SASRec, fp32_scorer, model_state
from sasrec_nb.int8.bench import random_seqs, synthetic_models
torch.set_num_threads(2)
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) / 1024
model, qmodel = synthetic_models({items}, **{shape!r})
m = fp32_scorer(model) if "{path}".startswith("fp32") else Int8SASRec(model_state(qmodel))
del model, qmodel
seqs = random_seqs({items}, {batch}, {max_len})
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # memory freed while building goes back to the system: scoring cannot reuse it
open("/proc/self/clear_refs", "w").write("5")  # peak resident memory := current
before = status("VmRSS:")
with torch.no_grad():
    ids = m.scores(seqs).topk(10).indices if "{path}".endswith("scores") else m.recommend(seqs, 10)
print(json.dumps({{"resident_before_mb": before, "peak_mb": status("VmHWM:"), "ids": ids[:2].tolist()}}))
"""


def measure(path: str, items: int, batch: int) -> dict:
    code = PROBE.format(items=items, shape=SHAPE, path=path, batch=batch, max_len=SHAPE["max_len"])
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    cwd=ROOT).stdout.splitlines()[-1])
    return {"path": path, "num_items": items, "batch": batch,
            "resident_before_mb": round(out["resident_before_mb"], 1),
            "growth_while_scoring_mb": round(out["peak_mb"] - out["resident_before_mb"], 1),
            "top10_first_users": out["ids"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "topk_memory.json")
    args = parser.parse_args()
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("this measurement resets the peak resident memory through /proc/self/clear_refs (Linux)")
    rows = []
    for path in PATHS:
        rows.append(measure(path, args.items, args.batch))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "top10_first_users"}), flush=True)
    same = {p: rows[i]["top10_first_users"] for i, p in enumerate(PATHS)}
    report = {"what": "growth of the peak resident memory while scoring a batch and taking its top-10, in a fresh "
                      "process per path (the model itself excluded)",
              "shape": SHAPE, "score_matrix_mb": round(args.batch * args.items * 4 / 2**20, 1),
              "same_top10": {"fp32": same["fp32_scores"] == same["fp32_recommend"],
                             "int8": same["int8_scores"] == same["int8_recommend"]},
              "results": rows, "machine": machine_info(2)}
    files.write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
