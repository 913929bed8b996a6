"""Tables: the committed results JSON (``results/<dataset>/<profile>/*.json``) and live paired comparisons."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from torch import nn

from . import metrics
from .config import Profile, results_dir
from .files import read_json
from .loaders import Split
from .training import evaluate

METHOD_ORDER = ("fp32", "fp32_ft", "rtn_absmax", "rtn_mse", "ste", "lsq", "pact", "dorefa", "apot", "adaround")
#: post-training rows a QAT run is paired with (``vs_ptq`` in its results JSON)
PTQ_ROWS = ("rtn_absmax", "rtn_mse", "adaround")


def load_results(profile: Profile, folder: Path | None = None) -> pd.DataFrame:
    """One row per run: metrics under both protocols, the paired difference to FP32, size and cost, and the digest of
    the FP32 weights it started from (``FP32 digest``; None in a file written before results recorded it)."""
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
            "cpu": r.get("cpu", ""), "QAT lr": r.get("settings", {}).get("qat_lr"),
            "embed_bits": r.get("embed_bits") or 32, "seed": r.get("seed"),
            "FP32 digest": r.get("start", {}).get("fp32"),
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


def load_controls(profile: Profile) -> pd.DataFrame:
    """The fine-tuning control's runs (``fp32_ft``, :func:`sasrec_nb.experiments.finetuned_fp32`) as rows of
    :func:`load_results`, from the results folder's ``controls/`` (empty when it has not run)."""
    folder = results_dir(profile) / "controls"
    return load_results(profile, folder) if folder.is_dir() else pd.DataFrame()


def control_text(controls: pd.DataFrame, profile: str) -> str:
    """A sentence on the fine-tuning control (:func:`load_controls`), one per QAT rate it ran at: its mean and seed range
    as % of FP32 and every seed's paired interval, i.e. what QAT's extra training does to the model without any
    quantizer."""
    if controls.empty:
        return ("The fine-tuning control (FP32 fine-tuned with QAT's recipe and no quantizer) has not run: "
                f"python -m sasrec_nb.train --profile {profile} --method fp32_ft --seeds ...")
    # one sentence per rate, the profile's own rate (the runs without _lr in their name) first
    groups = sorted(controls.groupby("QAT lr", sort=False, dropna=False),
                    key=lambda group: all(run.startswith("fp32_ft_lr") for run in group[1].index))

    def result(runs: pd.DataFrame) -> str:
        pct = runs["% of FP32"]
        spread = f", seeds {pct.min():.1f}–{pct.max():.1f}" if len(pct) > 1 else ""
        intervals = "; ".join(f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(runs["CI low"], runs["CI high"]))
        apart = int(((runs["CI low"] > 0) | (runs["CI high"] < 0)).sum())
        verdict = {0: "none excludes zero", len(pct): "every one excludes zero"}.get(
            apart, f"{apart} of {len(pct)} exclude zero")
        return (f"{len(pct)} run{'s' if len(pct) > 1 else ''}) keeps {pct.mean():.1f} % of FP32{spread}, paired 95 % "
                f"intervals {intervals} ({verdict})")

    (rate, usual), others = groups[0], groups[1:]
    pct = usual["% of FP32"]
    at = f" at lr {rate:g}" if others else ""
    text = (f"The control `fp32_ft` (the FP32 model fine-tuned with QAT's recipe — same epochs, rate, windows and "
            f"seeds — and no quantizer{at}; {result(usual)}: a QAT row's % of FP32 holds this extra training "
            f"({pct.mean() - 100:+.1f} points) as well as the cost of its quantizers.")
    for rate, runs in others:
        text += (f" At the rate of the low-bit rows, lr {rate:g}, the control (`{runs.index[0].split('_seed')[0]}`; "
                 f"{result(runs)}: {runs['% of FP32'].mean() - 100:+.1f} points from the training alone.")
    return text


def setting(weight_bits: int, embed_bits: int, act_bits: int) -> str:
    """A grid row's name: ``W4E4A8`` (weights, item/position tables, activations)."""
    return f"W{weight_bits}E{embed_bits}A{act_bits}"


def grid_order(name: str) -> tuple[int, int, int]:
    """Sort key of a setting name (:func:`setting`) in the grid's order: activation bits, then weight and table bits,
    from high to low (W8E8A8, W4E4A8, …, W2E2A8, W8E8A4, W4E4A4, W8E8A3, …)."""
    match = re.fullmatch(r"W(\d+)E(\d+)A(\d+)", name)
    if match is None:
        raise ValueError(f"not a setting name: {name!r} (expected e.g. W4E4A8)")
    wb, eb, ab = map(int, match.groups())
    return -ab, -wb, -eb


def seed_summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, method) of a results table (:func:`load_results`), in the grid's order (settings by
    :func:`grid_order`, then methods by :data:`METHOD_ORDER`): the number of seeds, the mean, min
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
    out = pd.DataFrame(rows)
    out["order"] = [(grid_order(n), METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER))
                    for n, m in zip(out["setting"], out["method"])]
    return out.sort_values("order").drop(columns="order").set_index(["setting", "method"])


def separated(summary: pd.DataFrame, setting_name: str, a: str, b: str) -> bool:
    """Whether two methods of one setting may be ranked: their seed ranges (min % … max %) do not overlap."""
    ra, rb = summary.loc[(setting_name, a)], summary.loc[(setting_name, b)]
    return ra["min %"] > rb["max %"] or rb["min %"] > ra["max %"]


def against_ptq(summary: pd.DataFrame, method: str) -> pd.DataFrame:
    """One row per setting of :func:`seed_summary` where ``method`` ran beside a post-training row (grid order): its %
    of FP32 (mean, seed range, number of seeds) beside each post-training row's % on the same grid, and for a QAT
    method whether every seed's paired interval lies above each post-training row (``above …``)."""
    rows = {}
    for name in sorted(dict.fromkeys(summary.index.get_level_values("setting")), key=grid_order):
        if (name, method) not in summary.index:
            continue
        mine = summary.loc[(name, method)]
        row = {f"{method} %": mine["% of FP32"], "min %": mine["min %"], "max %": mine["max %"],
               "seeds": int(mine["seeds"])}
        for ptq in PTQ_ROWS:
            if ptq != method and (name, ptq) in summary.index:
                row[f"{ptq} %"] = summary.loc[(name, ptq), "% of FP32"]
                if f"above {ptq}" in mine and not pd.isna(mine[f"above {ptq}"]):
                    row[f"above {ptq}"] = bool(mine[f"above {ptq}"])
        if any(f"{ptq} %" in row for ptq in PTQ_ROWS if ptq != method):  # a setting with a post-training row
            rows[name] = row
    if not rows:
        raise ValueError(f"no run of {method!r} beside a post-training row in the summary: run "
                         "python -m sasrec_nb.train --all first")
    table = pd.DataFrame(rows).T.rename_axis("setting")
    return table.astype({"seeds": int, **{c: float for c in table if c.endswith(" %")}})


def against_ptq_text(table: pd.DataFrame, method: str, low: str) -> str:
    """Sentences built from :func:`against_ptq`'s table: ``method`` at W8E8A8 (when it ran there) and at the setting
    ``low``, against the post-training rows of the same grid (the best of them named, every seed's interval read)."""
    ptq = [p for p in PTQ_ROWS if p != method and f"{p} %" in table]

    def others(row: pd.Series) -> str:
        return ", ".join(f"{p} {row[f'{p} %']:.1f} %" for p in ptq if not pd.isna(row.get(f"{p} %")))

    text = ""
    if "W8E8A8" in table.index:
        eight = table.loc["W8E8A8"]
        text = (f"At W8E8A8 {method} keeps {eight[f'{method} %']:.1f} % of FP32, the post-training rows "
                f"{others(eight)}. ")
    at_low = table.loc[low]
    best = max((p for p in ptq if not pd.isna(at_low.get(f"{p} %"))), key=lambda p: at_low[f"{p} %"])
    spread = f" (seeds {at_low['min %']:.1f}–{at_low['max %']:.1f} %)" if at_low["seeds"] > 1 else ""
    text += (f"At {low} {method} keeps {at_low[f'{method} %']:.1f} % of FP32{spread}, against {others(at_low)}; "
             f"the best post-training row there is {best}.")
    verdicts = {p: at_low[f"above {p}"] for p in ptq
                if f"above {p}" in at_low and not pd.isna(at_low[f"above {p}"])}
    above = [p for p, v in verdicts.items() if v]
    if above:
        text += f" Every seed's paired 95 % interval lies above {', '.join(above)}."
    elif verdicts:
        text += " No post-training row is beaten by every seed's paired 95 % interval."
    return text


def best_against_ptq(summary: pd.DataFrame) -> pd.DataFrame:
    """Per setting of :func:`seed_summary` (grid order) with both kinds of row: the best trained row (highest mean %
    of FP32) against the best post-training row, the gain in points, whether every seed's paired interval against that
    post-training row lies above zero (``supported``), the best row's seeds and range, and the trained methods it
    cannot be ranked against (:func:`separated`: seed ranges overlap)."""
    rows = {}
    for name in sorted(dict.fromkeys(summary.index.get_level_values("setting")), key=grid_order):
        here = summary.xs(name, level="setting")
        ptq = here.loc[[m for m in PTQ_ROWS if m in here.index], "% of FP32"]
        qat = here.loc[[m for m in here.index if m not in PTQ_ROWS], "% of FP32"]
        if ptq.empty or qat.empty:
            continue
        p, q = ptq.idxmax(), qat.idxmax()
        rows[name] = {"qat": q, "qat %": qat[q], "ptq": p, "ptq %": ptq[p], "gain": qat[q] - ptq[p],
                      "supported": here.loc[q].get(f"above {p}") is True, "seeds": int(here.loc[q, "seeds"]),
                      "min %": here.loc[q, "min %"], "max %": here.loc[q, "max %"],
                      "ties": [m for m in qat.index if m != q and not separated(summary, name, q, m)]}
    return pd.DataFrame(rows).T.rename_axis("setting")


def best_against_ptq_text(table: pd.DataFrame) -> str:
    """:func:`best_against_ptq` as one line per setting, then the largest gain that every seed's interval supports."""
    lines = []
    for name, r in table.iterrows():
        many = r["seeds"] > 1
        spread = f" (seeds {r['min %']:.1f}–{r['max %']:.1f})" if many else " (one seed)"
        verdict = ("every seed's interval lies above it" if many else "its interval lies above it") if r["supported"] \
            else ("not every seed's interval lies above it" if many else "its interval does not lie above it")
        lines.append(f"- **{name}**: best trained {r['qat']} {r['qat %']:.1f} %{spread}, best post-training {r['ptq']} "
                     f"{r['ptq %']:.1f} %: {r['gain']:+.1f} points; {verdict}"
                     + (f"; not ranked against {', '.join(r['ties'])} (seed ranges overlap)" if r["ties"] else "") + ".")
    sure = table[table["supported"].astype(bool)]
    if sure.empty:
        return "\n".join(lines) + "\n\nNo setting has a gain that every seed's interval supports."
    best = sure["gain"].astype(float).idxmax()
    r = sure.loc[best]
    seeds = "one seed" if r["seeds"] == 1 else f"{r['seeds']} seeds"
    return ("\n".join(lines) + f"\n\nThe largest gain that every seed's interval supports is at **{best}**: "
            f"{r['qat']} {r['gain']:+.1f} points over {r['ptq']} ({seeds}).")


#: the targets the comparison grid was set (issue 15), per setting: the best QAT row's mean % of FP32 at least this
TARGETS = {"full": {"W4E4A8": 99.0, "W2E2A8": 90.0, "W4E4A4": 97.0}}
#: the setting where, on the full profile, every QAT method must also beat round to nearest with an abs-max range
EVERY_ABOVE_ABSMAX = "W2E2A8"


def target_check(summary: pd.DataFrame, targets: dict[str, float]) -> pd.DataFrame:
    """Per target setting of :func:`seed_summary`: the best QAT row (highest mean % of FP32), its mean and seed range,
    the target and whether it is met, and for :data:`EVERY_ABOVE_ABSMAX` whether every seed of every QAT method has
    its paired interval against ``rtn_absmax`` above zero. A setting that has not run is a row with ``ran`` False."""
    rows = {}
    for name, target in targets.items():
        here = summary.xs(name, level="setting") if name in summary.index.get_level_values("setting") else None
        qat = None if here is None else here[[m not in PTQ_ROWS for m in here.index]]
        if qat is None or qat.empty:
            rows[name] = {"ran": False, "target %": target}
            continue
        best = qat["% of FP32"].idxmax()
        row = {"ran": True, "best": best, "best %": qat.loc[best, "% of FP32"], "min %": qat.loc[best, "min %"],
               "max %": qat.loc[best, "max %"], "seeds": int(qat.loc[best, "seeds"]), "target %": target,
               "met": bool(qat.loc[best, "% of FP32"] >= target)}
        if name == EVERY_ABOVE_ABSMAX:
            above = qat["above rtn_absmax"] if "above rtn_absmax" in qat else pd.Series(dtype=object)
            row["every QAT above rtn_absmax"] = bool(len(above) == len(qat) and above.notna().all() and above.all())
        rows[name] = row
    return pd.DataFrame(rows).T.rename_axis("setting")


def target_text(checks: pd.DataFrame) -> str:
    """:func:`target_check` in sentences: each target met or missed, by how much, with the best row named."""
    lines = []
    for name, row in checks.iterrows():
        if not row["ran"]:
            lines.append(f"- **{name}** (best QAT ≥ {row['target %']:.0f} % of FP32): not run.")
            continue
        spread = f", seeds {row['min %']:.1f}–{row['max %']:.1f}" if row["seeds"] > 1 else ", one seed"
        verdict = "met" if row["met"] else f"**missed** by {row['target %'] - row['best %']:.1f} points"
        line = (f"- **{name}** (best QAT ≥ {row['target %']:.0f} % of FP32): highest QAT mean {row['best']} "
                f"{row['best %']:.1f} %{spread}; {verdict}.")
        if "every QAT above rtn_absmax" in row and not pd.isna(row["every QAT above rtn_absmax"]):
            line += (" Every QAT method is above round to nearest with an abs-max range, every seed's paired 95 % "
                     "interval excluding zero: " + ("met." if row["every QAT above rtn_absmax"] else "**missed**."))
        lines.append(line)
    return "\n".join(lines)


def kept_epochs(results: pd.DataFrame, method: str) -> str:
    """A sentence on which QAT epoch :func:`snb.fit` kept (the best validation NDCG@10) over ``method``'s runs in a
    results table (:func:`load_results`), so that prose about the kept epoch is read off the runs."""
    runs = results[results["method"] == method]
    if runs.empty or runs["best epoch"].isna().all():
        raise ValueError(f"no run of {method!r} with a kept epoch in the results: run python -m sasrec_nb.train --all")
    counts = runs["best epoch"].dropna().astype(int).value_counts().sort_index()
    epochs = int(runs["epochs"].max())
    parts = [f"epoch {e} in {n}" for e, n in counts.items()]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return (f"Over the {len(runs)} {method} runs of the comparison grid ({epochs} QAT epochs each) the kept epoch was "
            f"{listed}.")


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


def summary_markdown(summary: pd.DataFrame) -> str:
    """:func:`seed_summary` as a Markdown table (the README's grid): per setting and method the seeds, the mean % of
    FP32 with its range, every seed's paired interval against FP32, the worst seed's paired difference to each
    post-training row, and the packed size."""
    ptq = [p for p in PTQ_ROWS if f"vs {p}" in summary]
    head = ["setting", "method", "seeds", "% of FP32", "seed range", "95% CI vs FP32 (each seed)",
            *(f"vs {p} (worst seed)" for p in ptq), "model MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (name, method), row in summary.iterrows():
        spread = f"{row['min %']:.1f}–{row['max %']:.1f}" if row["seeds"] > 1 else ""
        versus = [f"{row[f'vs {p}']:+.4f} {row[f'vs {p} CI']}" if not pd.isna(row.get(f"vs {p}")) else ""
                  for p in ptq]
        lines.append("| " + " | ".join([name, method, str(int(row["seeds"])), f"{row['% of FP32']:.1f}", spread,
                                         row["intervals"], *versus, f"{row['model MB']:.3f}"]) + " |")
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


def sweep_table(sweep: dict, rows: str, columns: tuple[str, ...], value: str = "valid_ndcg@10") -> pd.DataFrame:
    """A sweep JSON's runs (keyed by the JSON of their settings, as ``scripts/sweep_*.py`` write them) as a table:
    one row per value of the setting ``rows``, one column per combination of ``columns``, ``value`` in the cells."""
    records = [{**json.loads(key), value: run[value]} for key, run in sweep["runs"].items()]
    return pd.DataFrame(records).pivot_table(index=rows, columns=list(columns), values=value)


def rate_by_width(sweeps: list[dict], epochs: int) -> pd.DataFrame:
    """QAT rate sweeps (``scripts/sweep_qat_length.py`` JSON, each from one FP32 model) read per setting: for each
    width (weights and tables; activations at 8) and rate, the best validation NDCG@10 of an ``epochs``-long run without
    distillation as % of FP32's, averaged over the methods that ran every rate of that setting (``methods``)."""
    rows = [{"setting": setting(r["bits"], r.get("embed_bits") or r["bits"], 8), "method": r["method"],
             "lr": r["qat_lr"], "%": 100 * max(r["valid_ndcg@10"]) / sweep["fp32_valid_ndcg@10"]}
            for sweep in sweeps for r in sweep["runs"] if r["epochs"] == epochs and not r.get("distill")]
    runs = pd.DataFrame(rows)
    out = {}
    for name, runs_at in runs.groupby("setting"):
        rates = sorted(runs_at["lr"].unique())
        methods = sorted(set.intersection(*(set(runs_at.loc[runs_at["lr"] == lr, "method"]) for lr in rates)))
        common = runs_at[runs_at["method"].isin(methods)]
        out[name] = {**common.groupby("lr")["%"].mean().to_dict(), "methods": ", ".join(methods)}
    table = pd.DataFrame.from_dict(out, orient="index")
    table = table[sorted(c for c in table if c != "methods") + ["methods"]]
    return table.loc[sorted(table.index, key=grid_order)]
