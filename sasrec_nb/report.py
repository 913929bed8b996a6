"""Tables: the committed results JSON (``results/<dataset>/<profile>/*.json``) and live paired comparisons."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from torch import nn

from . import metrics
from .config import Profile, results_dir
from .files import read_json
from .loaders import Split
from .training import evaluate

METHOD_ORDER = ("fp32", "ste", "lsq", "pact", "dorefa", "apot", "adaround")


def load_results(profile: Profile, folder: Path | None = None) -> pd.DataFrame:
    """One row per run: metrics under both protocols, the paired difference to FP32, size and cost."""
    folder = folder or results_dir(profile)
    rows = []
    for path in sorted(folder.glob("*.json")):
        r = read_json(path)
        if "test" not in r:
            continue
        row = {
            "run": r["run"], "method": r["method"],
            "weight_bits": r["weight_bits"] or 32, "act_bits": r["act_bits"] or 32,
            "full NDCG@10": r["test"]["full"]["ndcg@10"], "full Hit@10": r["test"]["full"]["hit@10"],
            "sampled100 NDCG@10": r["test"]["sampled100"]["ndcg@10"],
            "sampled100 Hit@10": r["test"]["sampled100"]["hit@10"],
            "model MB": r["model_bytes"] / 1e6, "train s": r["train_seconds"], "s/epoch": r["seconds_per_epoch"],
            "epochs": r["epochs"], "n_users": r["n_users"], "cpu": r.get("cpu", ""),
        }
        vs = r.get("vs_fp32", {}).get("full")
        if vs:
            d = vs["diff_ndcg@10"]
            row.update({"FP32 start": vs["fp32_ndcg@10"], "% of FP32": 100 * vs["ratio"], "Δ NDCG@10": d["mean"],
                        "95% CI": f"[{d['ci95_low']:+.4f}, {d['ci95_high']:+.4f}]",
                        "CI low": d["ci95_low"], "CI high": d["ci95_high"]})
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    df["order"] = df["method"].map({m: i for i, m in enumerate(METHOD_ORDER)})
    return df.sort_values(["order", "weight_bits"], ascending=[True, False]).drop(columns="order").set_index("run")


def markdown_table(df: pd.DataFrame) -> str:
    """The README's results table."""
    cols = ["method", "weight_bits", "act_bits", "full NDCG@10", "full Hit@10", "sampled100 NDCG@10",
            "sampled100 Hit@10", "FP32 start", "% of FP32", "95% CI", "model MB", "train s"]
    view = df[[c for c in cols if c in df]].copy()
    lines = ["| " + " | ".join(["run"] + list(view.columns)) + " |", "|" + "---|" * (len(view.columns) + 1)]
    for run, row in view.iterrows():
        cells = []
        for c in view.columns:
            v = row[c]
            if isinstance(v, float):
                v = "" if pd.isna(v) else (f"{v:.1f}" if c in ("% of FP32", "train s") else
                                           f"{v:.2f}" if c == "model MB" else f"{v:.4f}")
            cells.append(str(v))
        lines.append("| " + " | ".join([run] + cells) + " |")
    return "\n".join(lines)


def paired_table(models: dict[str, nn.Module], baseline: nn.Module, split: Split, batch_size: int = 512):
    """Test NDCG@10 of each model against the baseline on the same users: mean difference and its
    paired 95 % confidence interval, for both protocols (a pandas DataFrame)."""
    base = evaluate(baseline, split.test, batch_size, per_user=True)["per_user_ndcg@10"]
    rows = {}
    for name, m in models.items():
        mine = evaluate(m, split.test, batch_size, per_user=True)["per_user_ndcg@10"]
        for p in metrics.PROTOCOLS:
            d = metrics.paired_difference(base[p], mine[p])
            rows[(name, p)] = {"NDCG@10": mine[p].mean().item(), "FP32": base[p].mean().item(),
                               "difference": d["mean"], "95% CI low": d["ci95_low"], "95% CI high": d["ci95_high"],
                               "% of FP32": 100 * mine[p].mean().item() / base[p].mean().item()}
    return pd.DataFrame(rows).T.round(4)
