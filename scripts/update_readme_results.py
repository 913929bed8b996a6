"""Regenerate the README's results section from the committed results and benchmark JSON.

    python scripts/update_readme_results.py

The tables sit between the markers ``<!-- results:start -->`` and ``<!-- results:end -->``;
tests/test_readme_results.py checks that they match the JSON files.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- results:start -->", "<!-- results:end -->"


def render() -> str:
    from sasrec_nb import report
    from sasrec_nb.config import get_profile
    from sasrec_nb.experiments import dataset_label

    parts = []
    for name in ("full", "quick"):
        profile = get_profile(name)
        df = report.load_results(profile)
        if df.empty:
            continue
        n_users = int(df["n_users"].iloc[0])
        parts.append(f"**{name} profile** — {dataset_label(profile.dataset)}, test split, {n_users:,} users "
                     f"(`results/{Path(str(report.results_dir(profile))).relative_to(ROOT / 'results')}/`):\n")
        if (df["embed_bits"] < 8).any():  # the comparison grid: one line per setting and method, every run below
            parts += grid_section(df, name)
        else:
            parts.append(report.markdown_table(df) + "\n")
    return "\n".join(parts + bench_sections(ROOT / "results" / "bench") + notebook_times(ROOT / "results"))


def notebook_times(folder: Path) -> list[str]:
    """Each notebook's wall time under scripts/execute_notebooks.py (results/notebook_times.json), over 60 s marked."""
    path = folder / "notebook_times.json"
    if not path.exists():
        return []
    runs = json.loads(path.read_text())["notebooks"]
    cpus = ", ".join(sorted({r["cpu"] for r in runs.values()}))
    rows = [f"| `{name}` | {r['seconds']:.0f}{' **(over 60 s)**' if r['seconds'] > 60 else ''} | {r['threads']} | "
            f"{'cold (empty)' if r.get('cold_cache') else 'warm'} | "
            f"{'cached' if r['fp32_cached'] else 'from the weights of record or trained'} | {r['load_average_1']:.1f} |"
            for name, r in runs.items()]
    return [f"**Notebook run times** (`python scripts/execute_notebooks.py [--cold]`, quick profile, {cpus}; "
            "`results/notebook_times.json`). A cold cache is a fresh clone's: every quantized run a notebook shows is "
            "trained in it. A load above the thread count means other work shared the cores, and the time is an upper "
            "bound:\n",
            "| notebook | seconds | threads | checkpoint cache | quick FP32 model | load (1 min) |\n"
            "|---|---|---|---|---|---|", *rows, ""]


def grid_section(df, profile: str) -> list[str]:
    """The grid of a profile (``python -m sasrec_nb.train --all``): its seed summary, its time and every run."""
    from sasrec_nb import report
    from sasrec_nb.config import get_profile

    runs = df[df["method"] != "fp32"]
    cpus = ", ".join(sorted(set(runs["cpu"])))
    summary = report.seed_summary(df)
    targets = ([f"Its targets (`report.target_check`):\n\n"
                f"{report.target_text(report.target_check(summary, report.TARGETS[profile]))}\n"]
               if profile in report.TARGETS else [])
    return [f"The comparison grid (`python -m sasrec_nb.train --all --profile {profile}`, or row by row with `--method`; "
            f"each JSON records its command): {len(runs)} quantized runs "
            f"from one FP32 model, {runs['train s'].sum() / 60:.0f} min of wall time for their training and "
            f"calibration ({cpus}; evaluation not counted). % of FP32 and the intervals are full-ranking NDCG@10, "
            "paired on the same users; \"vs …\" is the paired difference of the worst seed to that post-training row, "
            "with its 95 % interval.\n",
            report.summary_markdown(summary) + "\n",
            report.control_text(report.load_controls(get_profile(profile)), profile) + "\n", *targets,
            "<details><summary>every run of the grid</summary>\n",
            report.markdown_table(df) + "\n",
            "</details>\n"]


def bench_sections(folder: Path) -> list[str]:
    """The QAT step cost, FP32 time-to-quality and INT8 speed benchmarks, each with its command."""
    parts = []
    steps = {p: json.loads((folder / f"qat_step_{p}.json").read_text())
             for p in ("quick", "full") if (folder / f"qat_step_{p}.json").exists()}
    if steps:
        methods = list(next(iter(steps.values()))["ratio_vs_fp32"])[1:]
        parts.append("**Cost of a fake-quant training step** (W8A8, forward + backward + Adam, median ms; "
                     + "; ".join(f"`{d['command']}`" for d in steps.values()) + "):\n")
        parts.append("| profile | FP32 ms | " + " | ".join(methods) + " |\n|" + "---|" * (len(methods) + 2))
        for name, d in steps.items():
            parts.append(f"| {name} | {d['ms']['fp32']:.0f} | "
                         + " | ".join(f"{d['ratio_vs_fp32'][m]:.2f}×" for m in methods) + " |")
        parts.append("")
    ttq = folder / "time_to_quality.json"
    if ttq.exists():
        d = json.loads(ttq.read_text())
        goal = " and ".join(f"{k} NDCG@10 ≥ {v}" for k, v in d["reference"].items())
        reached = (f"reached at epoch {d['reached']['epoch']} after {d['reached']['train_seconds'] / 60:.1f} min of "
                   f"training" if d["reached"] else f"not reached in {len(d['epochs'])} epochs")
        parts.append(f"**FP32 time to quality** ({d['profile']} profile, {d['dataset']}, {d['machine']['threads']} "
                     f"threads, `{d['command'].strip()}`): the reference port's 200-epoch quality ({goal}, test) "
                     f"{reached}.\n")
    speed = folder / "int8_speed.json"
    if speed.exists():
        parts += int8_speed_section(json.loads(speed.read_text()))
    memory = folder / "topk_memory.json"
    if memory.exists():
        d = json.loads(memory.read_text())
        r = d["results"][0]
        parts.append(f"**Memory of the top-10** (`{d['machine']['command']}`; batch {r['batch']} against "
                     f"{r['num_items']:,} items, whose score matrix is {d['score_matrix_mb']:,.0f} MB; growth of the "
                     "peak resident memory while scoring, model excluded): "
                     + ", ".join(f"{x['path'].replace('_', ' ')} {x['growth_while_scoring_mb']:,.0f} MB"
                                 for x in d["results"])
                     + " (`recommend` scores chunks of items and keeps a running top-10; the same top-10: "
                     + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in d["same_top10"].items()) + ").\n")
    return parts


def int8_speed_section(d: dict) -> list[str]:
    """The INT8 benchmark: every row against the best FP32 path, the issue's targets, the size and memory figures."""
    from sasrec_nb.int8.bench import target_check

    m = d["machine"]
    isa = ", ".join(f for f, on in m["isa"]["flags"].items() if on) or "none of the listed"
    kernel = ("its u8 × s8 kernel adds pairs of products in 16 bits (no VNNI), so the PyTorch back end runs each "
              "Linear as two exact GEMMs" if m["int8_pair_sums_saturate"]
              else "its u8 × s8 kernel is exact in one GEMM")
    parts = [f"**Real INT8 speed** (`{m['command']}`; {m['cpu']}, ISA {isa}: {kernel}; {m['threads']} threads, "
             f"torch {m['torch']}, onnxruntime {m['onnxruntime']}; {d['timed']}). Speed-up = time of the fastest FP32 "
             "path of the row (PyTorch eager, `torch.compile` or onnxruntime: *best FP32*) / INT8 time:\n",
             "| shape | part | items | batch | best FP32 | its ms | INT8 PyTorch | INT8 onnxruntime "
             "| FP32 eager ms | FP32 compile ms | FP32 onnxruntime ms |\n|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["results"]:
        x, ms = r["speedup_vs_best_fp32"], r["ms"]
        parts.append(f"| {r['shape']} (d {r['embed_dim']}, L {r['max_len']}) | {r['part']} | {r['num_items']:,} | "
                     f"{r['batch']} | {r['best_fp32'].replace('fp32_', '')} | {ms[r['best_fp32']]:.2f} | "
                     f"{x['int8_torch']:.2f}× | {x['int8_onnx']:.2f}× | {ms['fp32_eager']:.2f} | "
                     f"{ms['fp32_compile']:.2f} | {ms['fp32_onnx']:.2f} |")
    checks = target_check(d)
    if checks:
        parts.append("\nTargets (quick shape, best INT8 path against the best FP32): " + "; ".join(
            f"{c['part']} {c['items']:,} items batch {c['batch']} ≥ {c['target']:g}×: {c['speedup']:.2f}× "
            f"({c['best_int8'].replace('int8_', '')}, {'met' if c['met'] else '**missed**'})" for c in checks) + ".")
    sizes = ", ".join(f"{s['shape']} {s['num_items']:,} items {s['int8_torch_vs_fp32']:.2f}×" for s in d["sizes"])
    parts.append(f"\nSaved INT8 model size against FP32 (PyTorch back end): {sizes}.\n")
    return parts


def updated(readme: str, table: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} … {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}{END}{tail}"


def main() -> int:
    path = ROOT / "README.md"
    path.write_text(updated(path.read_text(), render()))
    print("README.md results table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
