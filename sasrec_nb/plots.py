"""Every figure the notebooks show. Each function draws one figure of a fixed size and returns it;
the notebook cell ends with ``plt.show()`` (PNG output, nothing else printed)."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
from matplotlib.axes import Axes
from matplotlib.axis import Axis
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .data import SequenceData
from .loaders import Split

PALETTE = sns.color_palette("colorblind")
sns.set_theme(style="whitegrid", context="notebook", palette=PALETTE)


def _fig(width: float = 7.0, height: float = 3.6, ncols: int = 1):
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), layout="constrained")
    return fig, axes


def _legend_below(ax: Axes, ncol: int = 2, **kwargs) -> None:
    """``ax``'s legend under its x label, outside the data (constrained layout makes room for it)."""
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, **kwargs)


def _plain_log_ticks(axis: Axis, lo: float, hi: float) -> None:
    """Label a log ``axis`` with plain numbers (0.15, 2, 40) at 1-1.5-2-3-4-5-7 × 10^k inside [lo, hi], at most
    eight: no "4×10⁰" and no unlabelled stretch."""
    decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
    ticks = [m * 10.0 ** k for k in decades for m in (1, 1.5, 2, 3, 4, 5, 7) if lo <= m * 10.0 ** k <= hi]
    ticks = ticks[:: int(np.ceil(len(ticks) / 8))] if ticks else [lo, hi]
    axis.set_ticks(ticks, [f"{t:.3g}" for t in ticks])
    axis.set_minor_formatter(mticker.NullFormatter())


# -- data (notebook 01) ------------------------------------------------------------------------------
def sequence_lengths(data: SequenceData, max_len: int | None = None):
    lengths = np.array([len(s) for s in data.sequences])
    fig, ax = _fig()
    sns.histplot(lengths, bins=50, ax=ax, color=PALETTE[0])
    ax.set(xlabel="interactions per user", ylabel="users", title=f"{data.name}: sequence lengths")
    ax.axvline(np.median(lengths), color="k", ls="--", lw=1, label=f"median {np.median(lengths):.0f}")
    if max_len:
        ax.axvline(max_len, color=PALETTE[3], lw=1.5, label=f"max_len = {max_len}")
    ax.legend()
    return fig


def item_popularity(data: SequenceData):
    counts = np.sort(np.bincount(np.concatenate(data.sequences), minlength=data.num_items + 1)[1:])[::-1]
    fig, (a, b) = _fig(10, 3.6, 2)
    a.loglog(np.arange(1, len(counts) + 1), counts, color=PALETTE[0])
    a.set(xlabel="item rank by popularity", ylabel="interactions", title="long tail (log-log)")
    share = np.cumsum(counts) / counts.sum()
    b.plot(np.arange(1, len(counts) + 1) / len(counts) * 100, share * 100, color=PALETTE[1])
    top = int(np.searchsorted(share, 0.5)) + 1
    b.axhline(50, color="k", ls=":", lw=1)
    b.set(xlabel="% of items (most popular first)", ylabel="% of interactions",
          title=f"{top / len(counts):.0%} of items hold half of all interactions")
    return fig


def user_split(split: Split, user: int, show_last: int = 30):
    seq = split.data.sequences[user]
    shown = seq[-show_last:]
    offset = len(seq) - len(shown)
    roles = ["train"] * (len(shown) - 2) + ["valid", "test"]
    colors = {"train": PALETTE[0], "valid": PALETTE[1], "test": PALETTE[3]}
    fig, ax = _fig(10, 2.2)
    for k, (item, role) in enumerate(zip(shown, roles)):
        ax.add_patch(plt.Rectangle((k, 0), 0.9, 1, color=colors[role]))
        ax.text(k + 0.45, 0.5, str(item), ha="center", va="center", fontsize=7, rotation=90, color="white")
    for role, c in colors.items():
        ax.bar(0, 0, color=c, label=role)
    ax.set(xlim=(0, len(shown)), ylim=(0, 1), yticks=[],
           xlabel=f"position in the user's history (last {len(shown)} of {len(seq)}; first shown is #{offset + 1})",
           title=f"leave-one-out for user index {user}: item ids in time order")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


# -- model and training (notebook 02) ------------------------------------------------------------------
def attention_mask(mask: torch.Tensor, items: Sequence[int]):
    fig, ax = _fig(4.6, 4.0)
    sns.heatmap(mask.int().numpy(), cmap="Blues", cbar=False, square=True, ax=ax, linewidths=0.5, linecolor="white",
                xticklabels=list(items), yticklabels=list(items))
    ax.set(xlabel="key (item id)", ylabel="query (item id)", title="who may attend to whom (1 = allowed)")
    return fig


def training_curves(history: Mapping, title: str = "training"):
    rows = history["epochs"]
    fig, (a, b) = _fig(10, 3.4, 2)
    a.plot([r["epoch"] for r in rows], [r["train_loss"] for r in rows], "o-", ms=3, label="train")
    ev = [r for r in rows if "valid_loss" in r]
    a.plot([r["epoch"] for r in ev], [r["valid_loss"] for r in ev], "s-", ms=4, label="validation")
    a.set(xlabel="epoch", ylabel="cross-entropy", title=f"{title}: loss")
    a.legend()
    b.plot([r["epoch"] for r in ev], [r["ndcg@10"] for r in ev], "o-", label="NDCG@10 (full ranking)")
    b.plot([r["epoch"] for r in ev], [r["hit@10"] for r in ev], "s-", label="Hit@10 (full ranking)")
    if history.get("best_epoch"):
        b.axvline(history["best_epoch"], color="k", ls=":", lw=1, label="best (kept)")
    b.set(xlabel="epoch", ylabel="metric@10 on validation", title=f"{title}: validation")
    b.legend()
    return fig


def attention_weights(weights: torch.Tensor, items: Sequence[int], titles: Sequence[str]):
    """One heat map per layer/head: ``weights [n, L, L]`` for the non-padded positions."""
    n = len(weights)
    fig, axes = _fig(3.3 * n + 0.6, 3.4, n)
    axes = np.atleast_1d(axes)
    top = float(weights.max())
    for ax, w, t in zip(axes, weights, titles):
        sns.heatmap(w.detach().cpu().numpy(), cmap="viridis", vmin=0, vmax=top, ax=ax, cbar=False, square=True,
                    xticklabels=False, yticklabels=False)
        ax.set(title=t, xlabel="key position (earlier → later)", ylabel="query position")
    fig.colorbar(axes[0].collections[0], ax=list(axes), label="attention weight", shrink=0.9)
    return fig


def metric_bars(results: Mapping[str, Mapping], metric: str = "ndcg@10"):
    """Grouped bars: models × protocols, for one metric."""
    names = list(results)
    fig, axes = _fig(10, 3.4, 2)
    for ax, protocol in zip(axes, ("full", "sampled100")):
        values = [results[n][protocol][metric] for n in names]
        bars = ax.bar(names, values, color=PALETTE[: len(names)])
        ax.bar_label(bars, fmt="%.3f")
        ax.set(title=f"{metric} — {protocol}", ylim=(0, max(values) * 1.2), xlabel="model",
               ylabel=f"{metric} ({'full ranking' if protocol == 'full' else '1 positive + 100 sampled'})")
    return fig


# -- quantization (notebooks 03-08) -----------------------------------------------------------------
def staircase(x: torch.Tensor, x_hat: torch.Tensor, grad: torch.Tensor, title: str):
    """A quantizer's forward (the staircase) and the gradient the STE passes back."""
    fig, (a, b) = _fig(10, 3.4, 2)
    a.plot(x, x, color="grey", ls=":", lw=1, label="identity")
    a.plot(x, x_hat, color=PALETTE[0], lw=2, label="fake-quantized x̂")
    a.set(xlabel="x", ylabel="x̂", title=title)
    a.legend()
    b.plot(x, grad, color=PALETTE[3], lw=2)
    b.set(xlabel="x", ylabel="∂x̂/∂x used in backward", title="straight-through gradient", ylim=(-0.1, 1.2))
    return fig


def grid_histogram(before: torch.Tensor, after: torch.Tensor, levels_after: torch.Tensor, title: str,
                   levels_before: torch.Tensor | None = None, max_lines: int = 64,
                   names: tuple[str, str] = ("before QAT", "after QAT")):
    """Histograms of two weight rows (before and after QAT, or two grids: ``names``), each with its levels as red
    lines."""
    fig, axes = _fig(10, 3.4, 2)
    for ax, w, levels, name in zip(axes, (before, after), (levels_before if levels_before is not None else levels_after,
                                                            levels_after), names):
        lv = levels.flatten().detach().cpu().numpy()
        step = int(np.ceil(len(lv) / max_lines))
        ax.grid(False)
        for j, v in enumerate(lv[::step]):
            ax.axvline(v, color=PALETTE[3], lw=0.8, alpha=0.7, label="grid levels" if j == 0 else None)
        ax.hist(w.flatten().detach().cpu().numpy(), bins=80, color=PALETTE[0], alpha=0.9, label="weights")
        shown = f"{len(lv)} levels" + (f", every {step}th drawn" if step > 1 else "")
        ax.set(xlabel="weight value", ylabel="count", title=f"{name} ({shown})")
        ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
    fig.suptitle(title)
    return fig


def _mark_kept(ax, best_epoch: int | None) -> None:
    """A dashed line at the epoch QAT keeps (the best on validation; the model evaluated is that one)."""
    if best_epoch is not None:
        ax.axvline(best_epoch, color="k", ls="--", lw=1, label=f"kept: epoch {best_epoch} (best validation)")


def code_changes(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor], title: str):
    """How far QAT moved each weight on its integer grid: per layer, the share of codes that changed (left) and, over
    all layers, how many steps they moved (right, log scale)."""
    names = list(before)
    changed = [100 * (after[n] != before[n]).float().mean().item() for n in names]
    delta = torch.cat([(after[n].long() - before[n].long()).flatten() for n in names])
    fig, (a, b) = _fig(10, 3.6, 2)
    a.barh(range(len(names)), changed, color=PALETTE[0])
    a.set_yticks(range(len(names)), [n.replace("blocks.", "b") for n in names], fontsize=8)
    a.invert_yaxis()
    a.set(xlabel="% of weights whose code changed", title="per layer")
    steps, counts = torch.unique(delta, return_counts=True)
    b.bar(steps.numpy(), counts.numpy(), color=PALETTE[1])
    b.set(yscale="log", xlabel="code after − code before (grid steps)", ylabel="weights",
          title="how far they moved, all layers")
    fig.suptitle(title)
    return fig


def scale_trajectories(scales: Mapping[str, Sequence[float]], title: str, relative: bool = True,
                       best_epoch: int | None = None):
    """Each quantizer's scale (or α) per epoch, divided by its initial value: every quantizer of a role as a thin grey
    line, their median in black, and the two that moved most in colour, named in the legend under each panel; a
    dashed line marks ``best_epoch``, the epoch whose weights QAT keeps."""
    fig, axes = _fig(10, 4.6, 2)
    for ax, role in zip(axes, ("weight", "act")):
        names = [n for n in scales if ("weight_quantizer" in n) == (role == "weight")]
        curves = {n: np.asarray(scales[n], dtype=float) / (scales[n][0] if relative else 1.0) for n in names}
        if not curves:
            ax.set_axis_off()
            continue
        epochs = np.arange(len(next(iter(curves.values()))))
        for j, c in enumerate(curves.values()):
            ax.plot(epochs, c, color="0.7", lw=0.9, label=f"each of the {len(curves)} (grey)" if j == 0 else None)
        ax.plot(epochs, np.median(np.stack(list(curves.values())), 0), color="k", lw=2, marker="o", ms=4,
                label="median")
        moved = sorted(curves, key=lambda n: abs(curves[n][-1] - curves[n][0]), reverse=True)[:2]
        for k, n in enumerate(moved):
            ax.plot(epochs, curves[n], color=PALETTE[k + 1], lw=1.6, label=n.replace("_quantizer", "")
                    .replace("blocks.", "block "))
        _mark_kept(ax, best_epoch)
        ax.set(xlabel="epoch (0 = after calibration)", ylabel="s(t) / s(0)" if relative else "value",
               title=f"{len(curves)} {'weight' if role == 'weight' else 'activation'} quantizers", xticks=epochs)
        _legend_below(ax, title="the two that moved most in colour", title_fontsize=8)
    fig.suptitle(title)
    return fig


def clip_trajectories(history: Mapping, suffix: str = "ffn.fc2.input_quantizer", title: str = ""):
    """For the quantizers whose name ends with ``suffix``: the clip level (α, or the range a step spans) per epoch
    against the 99th / 99.9th percentile and the max of its input (real positions), and the share clipped; a dashed
    line marks the epoch QAT keeps (``history["best_epoch"]``)."""
    stats = history["quantizer_stats"]
    names = [n for n in stats if n.endswith(suffix)]
    fig, axes = _fig(10, 4.2, len(names) + 1)
    for ax, name in zip(axes, names):
        epochs = np.arange(len(stats[name]))
        _mark_kept(ax, history.get("best_epoch"))
        ax.plot(epochs, history["quantizer_scales"][name], "o-", color="k", label="α")
        for key, label, style, color in (("p99", "99th pct. |x|", ":", PALETTE[2]),
                                         ("p999", "99.9th pct. |x|", "--", PALETTE[0]),
                                         ("max", "max |x|", "-.", PALETTE[1])):
            ax.plot(epochs, [s[key] for s in stats[name]], style, color=color, label=label)
        ax.set(title=name.replace(".input_quantizer", " input"), xlabel="epoch (0: calibration)", yscale="log",
               ylabel="α and |x| (log scale)", xticks=epochs)
        _plain_log_ticks(ax.yaxis, *ax.get_ylim())
    _legend_below(axes[0])  # the same lines in every α panel: one legend
    for k, name in enumerate(names):
        axes[-1].plot([100 * s["clipped"] for s in stats[name]], "o-", color=PALETTE[k],
                      label=f"block {name.split('.')[1]}")
    axes[-1].set(title="values clipped (x ≥ α)", xlabel="epoch (0: calibration)", ylabel="% of values",
                 xticks=epochs)
    _legend_below(axes[-1])
    fig.suptitle(title)
    return fig


def alpha_sweep(sweep: Mapping, title: str):
    """A PACT sweep (``scripts/sweep_pact_alpha.py``): α per epoch of each setting, for every ReLU-output point (left),
    and the share clipped (right); the legend gives each setting's validation NDCG@10."""
    fig, (a, b) = _fig(10, 4.8, 2)
    for k, (setting, run) in enumerate(sweep["runs"].items()):
        label = ", ".join(f"{key.replace('pact_alpha_', '')} {value:g}" if isinstance(value, float | int) else
                          f"{key.replace('pact_alpha_', '')} {value}" for key, value in json.loads(setting).items())
        for j, point in enumerate(run["relu_points"].values()):
            style = "o-" if j == 0 else "s--"
            a.plot(point["alpha"], style, color=PALETTE[k], label=f"{label} (valid {run['valid_ndcg@10']:.3f})"
                   if j == 0 else None)
            b.plot([100 * c for c in point["clipped"]], style, color=PALETTE[k])
    points = [point for run in sweep["runs"].values() for point in run["relu_points"].values()]
    epochs = np.arange(max(len(point["alpha"]) for point in points))
    a.set(xlabel="epoch (0: calibration)", ylabel="α (log scale)", yscale="log", xticks=epochs,
          title="α of the FFN ReLU outputs\n(circles, solid: block 0; squares, dashed: block 1)")
    b.set(xlabel="epoch (0: calibration)", ylabel="% of values clipped", title="share of values above α",
          xticks=epochs)
    a.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.2), title="setting (validation NDCG@10)",
             title_fontsize=8)
    fig.suptitle(title)
    return fig


def first_gradients(grads: Mapping[str, Mapping[str, float]], title: str):
    """|∂L/∂α| of each quantizer at the first training step, one bar colour per start (``{start: {quantizer: g}}``),
    on a log axis: starts whose gradients differ by orders of magnitude are read side by side."""
    starts = list(grads)
    names = list(next(iter(grads.values())))
    fig, ax = _fig(10, 3.6)
    width = 0.8 / len(starts)
    for k, start in enumerate(starts):
        ax.bar([i + (k - (len(starts) - 1) / 2) * width for i in range(len(names))],
               [max(abs(grads[start][n]), 1e-12) for n in names], width, color=PALETTE[k], label=start)
    ax.set_xticks(range(len(names)), [n.replace("_quantizer", "").replace("blocks.", "b") for n in names],
                  rotation=45, ha="right", fontsize=8)
    ax.set(yscale="log", ylabel="|∂L/∂α| at the first step", title=title)
    ax.legend(title="α₀ set by", fontsize=8)
    return fig


def clipped_fractions(fractions: Mapping[str, float], title: str):
    """Share of each tensor outside its quantizer's range, in percent of its values: each bar labelled to 3
    significant digits, the label turned upright so that neighbours never overlap."""
    names = list(fractions)
    pct = [100 * fractions[n] for n in names]
    fig, ax = _fig(10, 3.8)
    bars = ax.bar(range(len(names)), pct, color=PALETTE[2])
    ax.bar_label(bars, labels=["0 %" if v == 0 else f"{v:.3g} %" for v in pct], fontsize=8, rotation=90, padding=3)
    ax.set_xticks(range(len(names)), [n.replace("_quantizer", "").replace("blocks.", "b") for n in names],
                  rotation=45, ha="right", fontsize=8)
    ax.set(xlabel="quantizer", ylabel="clipped share, % of values",
           title=title + ("" if any(pct) else " (nothing clipped)"),
           ylim=(0, max(max(pct) * 1.6, 1e-3)))
    return fig


def levels_compare(level_sets: Mapping[str, torch.Tensor], title: str):
    """Stem plot of several level sets on one axis each (e.g. uniform vs PoT vs APoT)."""
    n = len(level_sets)
    fig, axes = plt.subplots(n, 1, figsize=(10, 0.9 * n + 1.0), sharex=True, layout="constrained")
    for ax, (name, lv) in zip(np.atleast_1d(axes), level_sets.items()):
        v = lv.flatten().cpu().numpy()
        ax.vlines(v, 0, 1, color=PALETTE[0], lw=1)
        ax.plot(v, np.ones_like(v), "o", ms=3, color=PALETTE[0])
        ax.set(yticks=[], ylim=(0, 1.3))
        ax.set_ylabel(f"{name}\n({len(v)})", rotation=0, ha="right", va="center", fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel("level (fraction of the clipping value)")
    fig.suptitle(title)
    return fig


def quality_table(results: Mapping[str, Mapping], fp32: Mapping) -> pd.DataFrame:
    """NDCG@10 / Hit@10 under both protocols and the share of FP32's NDCG@10 kept."""
    rows = {}
    for name, r in {"FP32": fp32, **results}.items():
        rows[name] = {
            "full NDCG@10": r["full"]["ndcg@10"], "full Hit@10": r["full"]["hit@10"],
            "sampled100 NDCG@10": r["sampled100"]["ndcg@10"], "sampled100 Hit@10": r["sampled100"]["hit@10"],
            "% of FP32 (full NDCG@10)": 100 * r["full"]["ndcg@10"] / fp32["full"]["ndcg@10"],
        }
    return pd.DataFrame(rows).T.round(4)


# -- comparison and deployment (notebooks 09-10, README) -----------------------------------------------
#: Paul Tol's colour-blind-safe qualitative scheme "bright" (seven hues) and black: one per method
TOL_BRIGHT = {"blue": "#4477AA", "cyan": "#66CCEE", "green": "#228833", "yellow": "#CCBB44", "red": "#EE6677",
              "purple": "#AA3377", "grey": "#BBBBBB"}
#: one colour and marker per method, the same in every comparison figure: no two methods share a hue or a marker
METHOD_STYLE = {"ste": (TOL_BRIGHT["blue"], "o"), "lsq": (TOL_BRIGHT["green"], "s"),
                "pact": (TOL_BRIGHT["purple"], "^"), "dorefa": (TOL_BRIGHT["yellow"], "D"),
                "apot": (TOL_BRIGHT["grey"], "v"), "adaround": ("black", "X"),
                "rtn_absmax": (TOL_BRIGHT["red"], "x"), "rtn_mse": (TOL_BRIGHT["cyan"], "P")}


def _method_style(method: str, k: int) -> tuple:
    """(colour, marker) of ``method``; a method without a style of its own takes the k-th palette colour."""
    return METHOD_STYLE.get(method, (PALETTE[k % len(PALETTE)], "o"))


def quality_vs_bits(results: pd.DataFrame, title: str = "quality against weight bit width"):
    """Left: full-ranking NDCG@10 as % of each run's FP32 start against the weight bit width, with the paired 95 %
    interval as an error bar (methods side by side at each width); right: sampled-100 NDCG@10, FP32 dashed."""
    fig, (left, right) = _fig(10, 3.8, 2)
    runs = results[results["method"] != "fp32"]
    n_methods = runs["method"].nunique()
    for k, (method, rows) in enumerate(runs.groupby("method", sort=False)):
        rows = rows.sort_values("weight_bits")
        color, marker = _method_style(method, k)
        x = np.log2(rows["weight_bits"].to_numpy()) + 0.07 * (k - (n_methods - 1) / 2)
        pct = rows["% of FP32"].to_numpy()
        scale = 100 / rows["FP32 start"].to_numpy()
        err = np.stack([(rows["Δ NDCG@10"] - rows["CI low"]) * scale, (rows["CI high"] - rows["Δ NDCG@10"]) * scale])
        left.errorbar(x, pct, yerr=err, color=color, marker=marker, ms=5, lw=1.2, capsize=2, label=method)
        right.plot(x, rows["sampled100 NDCG@10"], color=color, marker=marker, ms=5, lw=1.2, label=method)
    left.axhline(100, color="k", ls="--", lw=1, label="FP32")
    if "fp32" in results.index:
        right.axhline(results.loc["fp32", "sampled100 NDCG@10"], color="k", ls="--", lw=1, label="FP32")
    bits = sorted(b for b in runs["weight_bits"].unique() if b < 32)
    for ax in (left, right):
        ax.set_xticks(np.log2(bits), [str(b) for b in bits])
        ax.set_xlabel("weight bits (activations 8 bits)")
    left.set(ylabel="full NDCG@10, % of FP32 (95 % interval)", title="full ranking, paired against FP32")
    right.set(ylabel="NDCG@10", title="sampled-100")
    left.legend(fontsize=8, ncol=2)
    fig.suptitle(title)
    return fig


def against_ptq(table: pd.DataFrame, method: str, title: str = ""):
    """:func:`report.against_ptq` as a picture: % of FP32 per setting, ``method`` as its mean with the seed range
    (min to max) and each post-training row as a marker beside it. Markers, not bars: the y axis starts where the
    data do, and a bar cut off there would exaggerate every difference."""
    fig, ax = _fig(10, 4.0)
    x = np.arange(len(table))
    color, marker = _method_style(method, 0)
    mine = table[f"{method} %"].astype(float)
    err = np.stack([mine - table["min %"].astype(float), table["max %"].astype(float) - mine])
    ax.errorbar(x - 0.15, mine, yerr=err, color=color, marker=marker, ms=8, ls="none", lw=2, capsize=4,
                label=f"{method} (seed range)")
    ptq = [c[:-2] for c in table.columns if c.endswith(" %") and c not in (f"{method} %", "min %", "max %")]
    for k, p in enumerate(ptq):  # beside the method, not on its seed range
        c, m = _method_style(p, k + 1)
        ax.scatter(x + 0.05 + 0.1 * k, table[f"{p} %"].astype(float), color=c, marker=m, s=50, zorder=3, label=p)
    for i in x[1:]:
        ax.axvline(i - 0.5, color="0.85", lw=0.8)
    ax.axhline(100, color="k", ls="--", lw=1, label="FP32")
    values = table[[f"{p} %" for p in ptq] + ["min %", "max %"]].astype(float).to_numpy()
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    ax.set(xticks=x, xticklabels=table.index, xlim=(-0.5, len(table) - 0.5),
           xlabel="setting: W = block weights, E = item and position tables, A = activations (bits)",
           ylim=(max(0.0, low - 5), max(104.0, high + 2)), ylabel="full NDCG@10, % of FP32",
           title=title or f"{method} against post-training quantization on the same grid")
    ax.grid(False, axis="x")
    _legend_below(ax, ncol=len(ptq) + 2)
    return fig


def grid_overview(summary: pd.DataFrame, ptq_rows: Sequence[str], title: str = "the comparison grid"):
    """Every (setting, method) of :func:`report.seed_summary`: mean % of FP32 with the seeds' range as a bar, settings
    in grid order along x, methods side by side; post-training rows (``ptq_rows``) as open markers, QAT filled."""
    fig, ax = _fig(11, 4.2)
    settings = list(dict.fromkeys(summary.index.get_level_values("setting")))
    methods = list(dict.fromkeys(summary.index.get_level_values("method")))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        color, marker = _method_style(method, k)
        rows = summary.xs(method, level="method").reindex(settings)
        x = np.arange(len(settings)) - 0.4 + width * (k + 0.5)
        err = np.stack([rows["% of FP32"] - rows["min %"], rows["max %"] - rows["% of FP32"]])
        post = method in ptq_rows
        ax.errorbar(x, rows["% of FP32"], yerr=err, color=color, marker=marker, ls="none", ms=6, capsize=2,
                    mfc="white" if post else color, label=f"{method} (post-training)" if post else method)
    for i in range(1, len(settings)):
        ax.axvline(i - 0.5, color="0.85", lw=0.8)
    ax.axhline(100, color="k", ls="--", lw=1, label="FP32")
    ax.set(xticks=np.arange(len(settings)), xticklabels=settings, xlim=(-0.5, len(settings) - 0.5),
           xlabel="setting: W = block weights, E = item and position tables, A = activations (bits)",
           ylabel="full NDCG@10, % of FP32 (mean, seed range)", title=title)
    _legend_below(ax, ncol=5)
    return fig


def quality_vs_size(summary: pd.DataFrame, title: str = "quality against model size"):
    """Each (setting, method) of :func:`report.seed_summary` at its packed size: mean % of FP32 with the seeds' range
    as a bar, one colour and marker per method, and the Pareto front (no smaller model keeps more) as a step line,
    each setting on it named once above its best point; plain MB ticks on the log axis, the legend outside."""
    fig, ax = _fig(10, 4.2)
    flat = summary.reset_index()
    for k, (method, rows) in enumerate(flat.groupby("method", sort=False)):
        color, marker = _method_style(method, k)
        err = np.stack([rows["% of FP32"] - rows["min %"], rows["max %"] - rows["% of FP32"]])
        ax.errorbar(rows["model MB"], rows["% of FP32"], yerr=err, color=color, marker=marker, ls="none", ms=6,
                    capsize=2, label=method)
    front, best = [], -np.inf
    for _, row in flat.sort_values(["model MB", "% of FP32"], ascending=[True, False]).iterrows():
        if row["% of FP32"] > best:
            best = row["% of FP32"]
            front.append(row)
    ax.step([r["model MB"] for r in front], [r["% of FP32"] for r in front], where="post", color="0.4", lw=1,
            ls=":", label="Pareto front")
    tops = {r["setting"]: r for r in front}  # a setting on the front twice (two methods): named at its best
    for r in tops.values():
        ax.annotate(f"{r['setting']}\n{r['method']}", (r["model MB"], r["% of FP32"]), textcoords="offset points",
                    xytext=(0, 14), ha="center", va="bottom", fontsize=8, color="0.2",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.6", "alpha": 0.9},
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.8})
    ax.axhline(100, color="k", ls="--", lw=1, label="FP32")
    ax.set(xscale="log", xlabel="model size, MB (codes packed at their bit width, plus scales; log scale)",
           ylabel="full NDCG@10, % of FP32 (mean, seed range)", title=title)
    low, high = ax.get_ylim()  # room for the names: the highest front point at 78 % of the height
    ax.set_ylim(top=max(high, low + (max(r["% of FP32"] for r in front) - low) / 0.78))
    _plain_log_ticks(ax.xaxis, *ax.get_xlim())
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="method", title_fontsize=8)
    return fig


def activation_ranges(points: Mapping[str, Mapping], title: str = "activation ranges of the FP32 model"):
    """Per quantization point, on a log axis: the 99th and 99.9th percentile and the max of |x| over real
    positions (the max is the span of a fixed abs-max grid)."""
    names = list(points)
    y = np.arange(len(names))
    fig, ax = _fig(8, 0.28 * len(names) + 1.8)
    for key, label, marker, color in (("p99", "99th percentile of |x|", "|", PALETTE[2]),
                                      ("p999", "99.9th percentile", "x", PALETTE[0]),
                                      ("max", "max |x| (abs-max grid span)", "o", PALETTE[1])):
        ax.scatter([points[n][key] for n in names], y, marker=marker, color=color, label=label, zorder=3)
    labels = [n.replace(".input_quantizer", " input") for n in names]
    ax.set(yticks=y, yticklabels=labels, xscale="log", xlabel="|x| over the calibration sequences",
           ylabel="quantization point", title=title)
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    return fig


#: the range rules' colours: far apart in hue (black, green, purple), none the histogram's blue
RULE_COLORS = ["black", PALETTE[2], PALETTE[4]]


def range_rules(choice: Mapping, method: str, title: str):
    """Where each range rule ends a fixed grid on the heaviest-tailed activation (left: |x| histogram, log axes, with
    c and the 8-bit step of each rule), and what each rule gives ``method`` on validation (right: % of FP32)."""
    tail = choice["heaviest_tail"]
    fig, (a, b) = _fig(10, 3.6, 2)
    edges = np.array(tail["edges"])
    a.stairs(np.maximum(tail["counts"], 0.5), edges, fill=True, color=PALETTE[0], alpha=0.5)
    a.set(xscale="log", yscale="log", xlabel="|x| at real positions", ylabel="count",
          title=f"{tail['point']}: where each rule puts c")
    rules = list(choice["range_c"])
    for k, rule in enumerate(rules):
        c = choice["range_c"][rule][tail["point"]]
        a.axvline(c, color=RULE_COLORS[k], lw=2, label=f"{rule}: c = {c:.3g}, step {c / 127:.2g}")
    a.legend(fontsize=8, loc="lower left")
    scores = choice["valid_ndcg@10"][method]
    pct = [100 * scores[r] / choice["fp32_valid_ndcg@10"] for r in rules]
    bars = b.bar(rules, pct, color=RULE_COLORS[: len(rules)])
    b.bar_label(bars, labels=[f"{p:.1f} %" for p in pct])
    b.axhline(100, color="k", lw=0.8, ls=":")
    b.set(ylim=(min(pct) - 3, max(max(pct), 100) + 1.5), ylabel="validation NDCG@10, % of FP32",
          title=f"{method} W8A8 before training (chosen: {choice['chosen'][method]})")
    fig.suptitle(title)
    return fig


def dimension_steps(dim_max: Mapping[str, Sequence[float]], point: str, bits: int = 8):
    """The step a fixed abs-max grid of ``bits`` gets at an activation point, one panel per model (``{label: max|x|
    of each embedding dimension}``, one log axis for all): one step for the whole tensor (dashed) against one per
    dimension (bars)."""
    q_max = 2 ** (bits - 1) - 1
    fig, axes = plt.subplots(1, len(dim_max), figsize=(10, 3.6), layout="constrained", sharey=True, squeeze=False)
    for ax, (label, values) in zip(axes[0], dim_max.items()):
        steps = np.asarray(values, dtype=float) / q_max
        ax.bar(np.arange(len(steps)), steps, width=1.0, color=PALETTE[0], label="a grid per dimension")
        ax.axhline(steps.max(), color=PALETTE[3], ls="--", lw=2, label="one grid per tensor")
        ax.set(yscale="log", xlabel="embedding dimension", xlim=(-1, len(steps)),
               title=f"{label}\nper tensor: step {steps.max():.2g}; median dimension: {np.median(steps):.2g}")
    axes[0, 0].set_ylabel(f"{bits}-bit step = max|x| / {q_max}")
    axes[0, 0].legend(fontsize=8, loc="lower left", framealpha=0.9)
    fig.suptitle(f"{point}: the step of a fixed abs-max grid")
    return fig


def time_per_part(parts: Mapping[str, Mapping[str, float]], title: str):
    """Stacked bars: where each path's time goes (``{path: {part: ms}}``, e.g. from ``int8.bench.time_parts``)."""
    paths = list(parts)
    names = list(next(iter(parts.values())))
    fig, ax = _fig(10, 0.6 * len(paths) + 1.8)
    left = np.zeros(len(paths))
    for k, name in enumerate(names):
        ms = np.array([parts[p][name] for p in paths])
        ax.barh(paths, ms, left=left, color=PALETTE[k], label=name)
        left += ms
    for y, total in enumerate(left):
        ax.text(total, y, f" {total:.2f} ms", va="center", fontsize=9)
    ax.set(xlabel="ms per call (median)", title=title, xlim=(0, left.max() * 1.18))
    ax.invert_yaxis()
    ax.legend(fontsize=8, ncol=len(names), loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return fig


def int8_speedup(bench: Mapping, shape: str = "quick"):
    """INT8 speed-up over the best FP32 path of each row (eager, ``torch.compile`` or onnxruntime) against
    catalogue size: head and whole model. Colour = back end, marker = batch size; the log axis keeps the region
    below 1× (INT8 slower) as readable as the region above."""
    rows = [r for r in bench["results"] if r["shape"] == shape]
    fig, axes = _fig(10, 4.4, 2)
    markers = dict(zip(sorted({r["batch"] for r in rows}), ("o", "s", "^", "D")))
    for ax, part in zip(axes, ("head", "model")):
        for backend, color in (("int8_onnx", PALETTE[0]), ("int8_torch", PALETTE[1])):
            for batch, marker in markers.items():
                pts = sorted((r["num_items"], r["speedup_vs_best_fp32"][backend]) for r in rows
                             if r["part"] == part and r["batch"] == batch)
                if pts:
                    ax.plot(*zip(*pts), "-", marker=marker, color=color,
                            label=f"{'onnxruntime' if backend == 'int8_onnx' else 'PyTorch'}, batch {batch}")
        ax.axhline(1, color="k", lw=1, ls=":")
        ax.set(xscale="log", yscale="log", xlabel="items in the catalogue", ylabel="speed-up vs the best FP32",
               title="scoring head" if part == "head" else "whole model")
        lo, hi = ax.get_ylim()
        ax.set_yticks([t for t in (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8) if lo <= t <= hi])
        ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    # one legend under both panels (the same lines in each), a column per back end
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8)
    fig.suptitle(f"INT8 speed-up on {bench['machine'].get('threads')} CPU threads ({shape}-profile shape; "
                 "below 1×: INT8 is slower)")
    return fig


def level_occupancy(levels: torch.Tensor, codes: torch.Tensor, title: str, unit: str = "× α σ, + μ"):
    """How many weights land on each level of a (non-uniform) grid, drawn at the levels' own positions so that
    their spacing shows: a stem per level, its height the count."""
    levels = levels.detach().cpu().float()
    counts = np.bincount(codes.detach().cpu().flatten().long().numpy(), minlength=len(levels))
    fig, ax = _fig(10, 3.2)
    ax.vlines(levels.numpy(), 0, counts, color=PALETTE[0], lw=2)
    ax.plot(levels.numpy(), counts, "o", color=PALETTE[0], ms=4)
    ax.set(xlabel=f"level value ({unit}); spacing as on the grid", ylabel="weights", title=title)
    ax.set_ylim(bottom=0)
    return fig
