"""Draw the README's two figures from the committed results (the same functions the notebooks use).

    python scripts/make_readme_figures.py      # writes docs/quality_vs_bits.png and docs/int8_speedup.png
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
        title = f"NDCG@10 against weight bits — {dataset_label(full.dataset)}, full profile"
        fig = plots.quality_vs_bits(results, title)
        fig.savefig(out / "quality_vs_bits.png", dpi=110)
        print("docs/quality_vs_bits.png")
    bench = ROOT / "results" / "bench" / "int8_speed.json"
    if bench.exists():
        plots.int8_speedup(json.loads(bench.read_text()), "quick").savefig(out / "int8_speedup.png", dpi=110)
        print("docs/int8_speedup.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
