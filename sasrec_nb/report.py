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

METHOD_ORDER = ("fp32", "rtn_absmax", "rtn_mse", "ste", "lsq", "pact", "dorefa", "apot", "adaround")
#: post-training rows a QAT run is paired with (``vs_ptq`` in its results JSON)
PTQ_ROWS = ("rtn_absmax", "rtn_mse", "adaround")


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
            "epochs": r["epochs"], "best epoch": r.get("best_epoch"), "n_users": r["n_users"],
            "cpu": r.get("cpu", ""),
            "embed_bits": r.get("embed_bits") or 32, "seed": r.get("seed"),
        }
        for name, vs_ptq in r.get("vs_ptq", {}).items():
            d = vs_ptq["full"]["diff_ndcg@10"]
            row.update({f"vs {name}": d["mean"], f"vs {name} low": d["ci95_low"], f"vs {name} high": d["ci95_high"]})
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
    df["seed order"] = df["seed"].fillna(-1)
    return (df.sort_values(["order", "weight_bits", "embed_bits", "act_bits", "seed order"],
                           ascending=[True, False, False, False, True])
            .drop(columns=["order", "seed order"]).set_index("run"))


def setting(weight_bits: int, embed_bits: int, act_bits: int) -> str:
    """A grid row's name: ``W4E4A8`` (weights, item/position tables, activations)."""
    return f"W{weight_bits}E{embed_bits}A{act_bits}"


def seed_summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, method) of a results table (:func:`load_results`): the number of seeds, the mean, min
    and max % of FP32 over them, every seed's paired 95 % interval against FP32, and for QAT the paired difference of
    the worst seed to each post-training row (``vs rtn_absmax`` …: the interval of the seed with the lowest
    difference)."""
    runs = results[results["method"] != "fp32"]
    rows = []
    for (wb, eb, ab, method), group in runs.groupby(["weight_bits", "embed_bits", "act_bits", "method"], sort=False):
        pct = group["% of FP32"]
        row = {"setting": setting(wb, eb, ab), "method": method, "seeds": len(group),
               "% of FP32": pct.mean(), "min %": pct.min(), "max %": pct.max(),
               "intervals": "; ".join(f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(group["CI low"], group["CI high"])),
               "model MB": group["model MB"].iloc[0]}
        for ptq in PTQ_ROWS:
            if f"vs {ptq}" in group and group[f"vs {ptq}"].notna().all():
                worst = group.loc[group[f"vs {ptq}"].idxmin()]
                row[f"vs {ptq}"] = worst[f"vs {ptq}"]
                row[f"vs {ptq} CI"] = f"[{worst[f'vs {ptq} low']:+.4f}, {worst[f'vs {ptq} high']:+.4f}]"
                row[f"above {ptq}"] = bool((group[f"vs {ptq} low"] > 0).all())
        rows.append(row)
    return pd.DataFrame(rows).set_index(["setting", "method"])


def separated(summary: pd.DataFrame, setting_name: str, a: str, b: str) -> bool:
    """Whether two methods of one setting may be ranked: their seed ranges (min % … max %) do not overlap."""
    ra, rb = summary.loc[(setting_name, a)], summary.loc[(setting_name, b)]
    return ra["min %"] > rb["max %"] or rb["min %"] > ra["max %"]


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
