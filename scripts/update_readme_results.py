"""Regenerate the README's results table from the committed results JSON.

    python scripts/update_readme_results.py

The table sits between the markers ``<!-- results:start -->`` and ``<!-- results:end -->``;
tests/test_readme_results.py checks that it matches the JSON files.
"""
from __future__ import annotations

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
        parts.append(report.markdown_table(df) + "\n")
    return "\n".join(parts)


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
