"""Speed of the real INT8 SASRec against the best FP32 a user would run, written to JSON.

    python scripts/bench_int8.py                 # the full grid (tens of minutes; run it on an idle machine)
    python scripts/bench_int8.py --quick         # a small subset (a few minutes)

Paths, all through the same lastpos inference path and ending with top-10: ``fp32_eager`` (PyTorch FP32),
``fp32_compile`` (the same under ``torch.compile``), ``fp32_onnx`` (onnxruntime on the graph without Q/DQ),
``int8_torch`` (PyTorch's oneDNN u8 × s8 kernels) and ``int8_onnx`` (onnxruntime on the QDQ graph). Parts: the
scoring head alone (hidden [B, d] → top-10) and the whole model (item ids [B, L] → top-10), at the quick-profile
shape (d 128, 4 heads, 2 blocks, max_len 50, the paper's residual form) and the full-profile shape (d 50, 1 head,
2 blocks, max_len 200, the port's residual form), for synthetic catalogues of 3.4 K, 100 K and 1 M items and
batches 1, 32, 256. Every speed-up is against the **best** FP32 path of its row (``speedup_vs_best_fp32``). The
JSON records the CPU, its instruction sets and whether its u8 × s8 kernel saturates (no VNNI: the torch back end
then splits weights). Memory is measured by ``scripts/bench_topk_memory.py``.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from sasrec_nb import files

from sasrec_nb.int8 import Int8SASRec, OnnxSASRec, export_onnx, fp32_scorer, model_state, saved_bytes
from sasrec_nb.int8.bench import median_ms, random_seqs, set_threads, synthetic_models, top_k
from sasrec_nb.int8.torch_backend import pair_sums_saturate
from sasrec_nb.machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {
    "quick": dict(embed_dim=128, num_heads=4, num_blocks=2, max_len=50, residual="paper"),
    "full": dict(embed_dim=50, num_heads=1, num_blocks=2, max_len=200, residual="port"),
}
FULL_GRID = dict(shapes=("quick", "full"), items=(3416, 100_000, 1_000_000), batches=(1, 32, 256), repeat=15)
QUICK_GRID = dict(shapes=("quick",), items=(3416, 100_000), batches=(1, 32), repeat=7)


def bench_catalogue(shape: str, num_items: int, batches: tuple[int, ...], threads: int,
                    repeat: int) -> tuple[list, dict]:
    """Every path, part and batch for one model shape and catalogue size; also the saved sizes."""
    dims = SHAPES[shape]
    model, qmodel = synthetic_models(num_items, **dims)
    state = model_state(qmodel)
    del qmodel
    fp32 = fp32_scorer(model)
    paths = {"fp32_eager": fp32, "int8_torch": Int8SASRec(state)}
    torch._dynamo.reset()  # each catalogue compiles afresh: no recompilation limit carried over from the last one
    compiled = {"head": torch.compile(fp32.head, dynamic=True), "model": torch.compile(fp32.scores, dynamic=True)}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_files = {(name, part): export_onnx(source, Path(tmp) / f"{name}_{part}.onnx", part)
                      for name, source in (("int8_onnx", state), ("fp32_onnx", model)) for part in ("model", "head")}
        sessions = {key: OnnxSASRec(path, threads) for key, path in onnx_files.items()}
        sizes = {"fp32": saved_bytes(model), "int8_torch": saved_bytes(paths["int8_torch"]),
                 "int8_onnx": onnx_files["int8_onnx", "model"].stat().st_size,
                 "fp32_onnx": onnx_files["fp32_onnx", "model"].stat().st_size}
        for part in ("head", "model"):
            for batch in batches:
                x = (torch.randn(batch, dims["embed_dim"]) if part == "head"
                     else random_seqs(num_items, batch, dims["max_len"], seed=batch))
                calls = {name: (p.head if part == "head" else p.scores) for name, p in paths.items()}
                calls["fp32_compile"] = compiled[part]
                calls.update({name: sessions[name, part].scores for name in ("int8_onnx", "fp32_onnx")})
                tops = {name: top_k(call(x)) for name, call in calls.items()}
                ms = {name: median_ms(lambda c=call: top_k(c(x)), repeat=repeat) for name, call in calls.items()}
                best = min(("fp32_eager", "fp32_compile", "fp32_onnx"), key=ms.get)
                row = dict(shape=shape, **dims, num_items=num_items, part=part, batch=batch,
                           ms={k: round(v, 4) for k, v in ms.items()}, best_fp32=best,
                           speedup_vs_best_fp32={k: round(ms[best] / v, 3) for k, v in ms.items()},
                           speedup_vs_fp32_eager={k: round(ms["fp32_eager"] / v, 3) for k, v in ms.items()},
                           int8_onnx_vs_fp32_onnx=round(ms["fp32_onnx"] / ms["int8_onnx"], 3),
                           top10_agree_int8_torch_onnx=agreement(tops["int8_torch"], tops["int8_onnx"]),
                           top10_agree_fp32_eager_onnx=agreement(tops["fp32_eager"], tops["fp32_onnx"]))
                print(f"{shape:5} N={num_items:>9,} {part:5} B={batch:<3} "
                      + "  ".join(f"{k} {v:8.3f} ms ({row['speedup_vs_best_fp32'][k]:.2f}x)" for k, v in ms.items()),
                      flush=True)
                results.append(row)
    return results, {"shape": shape, "num_items": num_items, "bytes": sizes,
                     "int8_torch_vs_fp32": round(sizes["int8_torch"] / sizes["fp32"], 4),
                     "int8_onnx_vs_fp32": round(sizes["int8_onnx"] / sizes["fp32"], 4)}


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of rows whose top-10 sets are equal."""
    return (a.sort(-1).values == b.sort(-1).values).all(-1).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="quick shape, 3.4 K and 100 K items, batches 1 and 32")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default results/bench/int8_speed.json, or int8_speed_quick.json with --quick)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch and onnxruntime intra-op threads")
    args = parser.parse_args()
    grid = QUICK_GRID if args.quick else FULL_GRID
    out = args.out or ROOT / "results" / "bench" / ("int8_speed_quick.json" if args.quick else "int8_speed.json")
    set_threads(args.threads)
    report = {"machine": {**machine_info(args.threads), "int8_pair_sums_saturate": pair_sums_saturate()},
              "timed": "median wall time of scores (or head) + torch.topk(10) after 3 warm-up calls; "
                       "speed-ups against the fastest FP32 path of each row (eager, torch.compile, onnxruntime)",
              "method": "lsq (8-bit weights, activations and embeddings; random weights)", "results": [], "sizes": []}
    for shape in grid["shapes"]:
        for num_items in grid["items"]:
            rows, sizes = bench_catalogue(shape, num_items, grid["batches"], args.threads, grid["repeat"])
            report["results"] += rows
            report["sizes"].append(sizes)
    out.parent.mkdir(parents=True, exist_ok=True)
    files.write_json(out, report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
