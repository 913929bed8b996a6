"""Draw the README's figures from the committed results (the same functions the notebooks use).

    python scripts/make_readme_figures.py      # writes docs/quality_vs_bits.png, docs/quality_vs_size_<profile>.png
                                               # (each profile with a comparison grid) and docs/int8_speedup.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sasrec_nb import plots, report  # noqa: E402
from sasrec_nb.config import get_profile  # noqa: E402
from sasrec_nb.experiments import dataset_label  # noqa: E402


def main() -> int:
    out = ROOT / "docs"
    out.mkdir(exist_ok=True)
    full = get_profile("full")
    results = report.load_results(full)
    if not results.empty:
        # the grid's first block (weights and tables at one width, activations at 8), each method's first seed: one
        # point per method and width (other settings would join unrelated points into one line)
        runs = results[(results["act_bits"] == 8) & (results["embed_bits"] == results["weight_bits"])]
        runs = runs[~runs.duplicated(["method", "weight_bits"])]
        title = "NDCG@10 against bits, weights and tables at the same width (activations 8) — full profile"
        fig = plots.quality_vs_bits(results.loc[["fp32", *runs.index]], title)
        fig.savefig(out / "quality_vs_bits.png", dpi=110)
        print("docs/quality_vs_bits.png")
    for name in ("full", "quick"):
        profile = get_profile(name)
        runs = report.load_results(profile)
        if not runs.empty and (runs["embed_bits"] < 8).any():  # a comparison grid (python -m sasrec_nb.train --all)
            title = f"quality against packed model size — {dataset_label(profile.dataset)}, {name} profile grid"
            fig = plots.quality_vs_size(report.seed_summary(runs), title)
            fig.savefig(out / f"quality_vs_size_{name}.png", dpi=110)
            print(f"docs/quality_vs_size_{name}.png")
    bench = ROOT / "results" / "bench" / "int8_speed.json"
    if bench.exists():
        plots.int8_speedup(json.loads(bench.read_text()), "quick").savefig(out / "int8_speedup.png", dpi=110)
        print("docs/int8_speedup.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
