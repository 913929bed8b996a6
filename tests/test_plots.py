"""Every figure function draws on small inputs and returns a figure of its fixed size."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from sasrec_nb import plots  # noqa: E402
from sasrec_nb.data import synthetic  # noqa: E402
from sasrec_nb.loaders import leave_one_out  # noqa: E402
from sasrec_nb.model import attention_mask  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def drawn_axes(fig):
    """The axes of ``fig`` that draw data: the visible ones, colour bars aside."""
    bars = {m.colorbar.ax for ax in fig.axes for m in (*ax.collections, *ax.images) if getattr(m, "colorbar", None)}
    return [ax for ax in fig.axes if ax.axison and ax not in bars]


def labelled(ax, xlabel: bool = True, title: bool = True):
    """``ax`` names both axes and has a title (``xlabel``/``title`` False: a panel that shares them with the figure),
    and has a legend in a readable font where it labels more than one series; returns ``ax``."""
    assert ax.get_ylabel().strip(), "no y label"
    assert not xlabel or ax.get_xlabel().strip(), f"no x label ({ax.get_ylabel()!r})"
    assert not title or ax.get_title().strip(), f"no title ({ax.get_ylabel()!r})"
    series = [label for label in ax.get_legend_handles_labels()[1] if not label.startswith("_")]
    if len(series) > 1:
        legend = ax.get_legend()
        assert legend is not None, f"{len(series)} labelled series and no legend ({ax.get_title()!r})"
        assert [t.get_text() for t in legend.get_texts()] == series
        assert min(t.get_fontsize() for t in legend.get_texts()) >= 7
    return ax


def all_labelled(fig, n_axes: int):
    """``fig`` draws ``n_axes`` axes and every one is :func:`labelled`; returns them."""
    axes = drawn_axes(fig)
    assert len(axes) == n_axes
    return [labelled(ax) for ax in axes]


def test_data_figures():
    data = synthetic(num_users=40, num_items=120, mean_len=15, seed=0)
    split = leave_one_out(data, 10, num_negatives=20)
    for fig in (plots.sequence_lengths(data, 10), plots.item_popularity(data), plots.user_split(split, 3)):
        assert fig.get_figwidth() in (7.0, 10.0)


def test_model_and_training_figures():
    seqs = torch.tensor([[0, 0, 3, 5, 7]])
    assert plots.attention_mask(attention_mask(seqs)[0, 0], seqs[0].tolist()).get_figwidth() == 4.6
    history = {"epochs": [{"epoch": 1, "train_loss": 2.0, "valid_loss": 2.1, "ndcg@10": 0.1, "hit@10": 0.2},
                          {"epoch": 2, "train_loss": 1.5}], "best_epoch": 1}
    loss, valid = all_labelled(plots.training_curves(history), 2)
    assert loss.get_legend() is not None and valid.get_legend() is not None
    result = {"full": {"ndcg@10": 0.1}, "sampled100": {"ndcg@10": 0.4}}
    for ax in all_labelled(plots.metric_bars({"x": result, "y": result}), 2):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y"]


def test_attention_weights_share_one_labelled_colour_bar():
    weights = torch.rand(3, 5, 5)
    fig = plots.attention_weights(weights, list(range(5)), ["head 0", "head 1", "head 2"])
    maps = all_labelled(fig, 3)
    assert [ax.get_title() for ax in maps] == ["head 0", "head 1", "head 2"]
    bars = [ax for ax in fig.axes if ax not in maps]
    assert len(bars) == 1 and bars[0].get_ylabel() == "attention weight"
    top = float(weights.max())
    assert all(ax.collections[0].get_clim() == pytest.approx((0.0, top)) for ax in maps), "one scale for all maps"


def test_quantization_figures():
    x = torch.linspace(-1, 1, 11)
    forward, _ = all_labelled(plots.staircase(x, x.round(), torch.ones(11), "t"), 2)
    assert forward.get_legend() is not None
    fig = plots.grid_histogram(torch.randn(64), torch.randn(64), torch.linspace(-1, 1, 256), "t",
                               levels_before=torch.linspace(-2, 2, 16))
    for ax in all_labelled(fig, 2):
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["grid levels", "weights"]
    fig = plots.levels_compare({"u": torch.linspace(0, 1, 4), "p": torch.tensor([0, 0.25, 0.5, 1.0])}, "t")
    rows = drawn_axes(fig)  # stacked rows on one shared x axis: the x label under the last, the title over all
    assert [ax.get_ylabel() for ax in rows] == ["u\n(4)", "p\n(4)"] and rows[-1].get_xlabel()
    assert fig.get_suptitle() == "t"
    r = {"full": {"ndcg@10": 0.1, "hit@10": 0.2}, "sampled100": {"ndcg@10": 0.4, "hit@10": 0.6}}
    points = {"a.input_quantizer": {"p99": 1.0, "p999": 2.0, "max": 5.0},
              "b_out": {"p99": 0.5, "p999": 1.0, "max": 1.5}}
    fig = plots.activation_ranges(points)
    assert fig.get_figwidth() == 8
    (ax,) = all_labelled(fig, 1)
    assert len(ax.get_legend().get_texts()) == 3
    table = plots.quality_table({"q": r}, r)
    assert table.loc["q", "% of FP32 (full NDCG@10)"] == 100.0


def test_range_setting_and_clip_figures():
    choice = {"heaviest_tail": {"point": "p", "edges": [1e-3, 1e-2, 1e-1, 1, 10, 60], "counts": [5, 50, 500, 50, 2]},
              "range_c": {"absmax": {"p": 60.0}, "percentile": {"p": 8.0}, "mse": {"p": 20.0}},
              "valid_ndcg@10": {"dorefa": {"absmax": 0.17, "percentile": 0.185, "mse": 0.18}},
              "fp32_valid_ndcg@10": 0.19, "chosen": {"dorefa": "percentile"}}
    fig = plots.range_rules(choice, "dorefa", "t")
    assert fig.get_figwidth() == 10 and len(fig.axes) == 2
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["absmax", "percentile", "mse"]
    dims = {"full": [1.0, 2.0, 66.0, 1.5], "quick": [2.0, 3.0, 2.5, 2.0]}  # one outlier dimension in "full"
    fig = plots.dimension_steps(dims, "blocks.1.ffn_out")
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == ["full", "quick"]
    ax = fig.axes[0]
    assert len(ax.patches) == 4 and ax.get_yscale() == "log" and ax.get_legend() is not None
    assert ax.lines[0].get_ydata()[0] == pytest.approx(66 / 127)
    stats = [{"p99": 1.0, "p999": 2.0, "max": 3.0, "clipped": 0.0},
             {"p99": 1.0, "p999": 2.0, "max": 3.0, "clipped": 0.01}]
    history = {"quantizer_scales": {"blocks.0.ffn.fc2.input_quantizer": [3.0, 2.5]},
               "quantizer_stats": {"blocks.0.ffn.fc2.input_quantizer": stats}}
    fig = plots.clip_trajectories(history, title="t")
    assert len(fig.axes) == 2 and fig.axes[0].get_legend() is not None


def test_alpha_sweep_figure():
    point = {"alpha": [3.0, 2.0, 1.5], "p99": [1, 1, 1], "p999": [2, 2, 2], "clipped": [0.0, 0.001, 0.002]}
    run = {"relu_points": {"a": point, "b": point}}
    sweep = {"runs": {'{"pact_alpha_lr": 30.0, "pact_alpha_decay": 0.0001}': {"valid_ndcg@10": 0.1, **run},
                      '{"pact_alpha_lr": 30.0, "pact_alpha_decay": 0.0}': {"valid_ndcg@10": 0.09, **run},
                      '{"act_bits": 2, "pact_alpha_rule": "mse", "pact_alpha_lr": 0.1}': {"valid_ndcg@10": 0.08,
                                                                                          **run}}}
    fig = plots.alpha_sweep(sweep, "t")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["lr 30, decay 0.0001 (valid 0.100)", "lr 30, decay 0 (valid 0.090)",
                      "act_bits 2, rule mse, lr 0.1 (valid 0.080)"]


def test_first_gradients_figure():
    fig = plots.first_gradients({"absmax": {"embed_out": 3e9, "head_input": 0.0}, "mse": {"embed_out": 0.04,
                                                                                        "head_input": 0.2}}, "t")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel() and len(ax.patches) == 4
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["absmax", "mse"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["embed_out", "head_input"]


def test_time_per_part_figure():
    parts = {"FP32": {"embedding": 0.1, "Linears": 0.5, "head": 0.2}, "INT8": {"embedding": 0.1, "Linears": 0.3,
                                                                              "head": 0.1}}
    fig = plots.time_per_part(parts, "t")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["embedding", "Linears", "head"]


def test_code_changes_figure():
    before = {"blocks.0.a": torch.tensor([1, 2, 3, 4]), "blocks.1.b": torch.tensor([0, 0, 5, 5])}
    after = {"blocks.0.a": torch.tensor([1, 3, 3, 2]), "blocks.1.b": torch.tensor([0, 0, 5, 5])}
    fig = plots.code_changes(before, after, "t")
    assert [round(p.get_width()) for p in fig.axes[0].patches] == [50, 0]


def test_int8_speedup_draws_against_the_best_fp32():
    rows = [{"shape": "quick", "part": part, "num_items": n, "batch": b,
             "speedup_vs_best_fp32": {"int8_torch": 1.5, "int8_onnx": 2.0}}
            for part in ("head", "model") for n in (3416, 100_000) for b in (1, 32)]
    fig = plots.int8_speedup({"results": rows, "machine": {"threads": 2}}, "quick")
    assert fig.get_figwidth() == 10.0
    assert "best FP32" in fig.axes[0].get_ylabel()
    assert len(fig.axes[0].lines) == 2 * 2 + 1  # two back ends x two batches, and the line at 1


def test_level_occupancy_draws_levels_at_their_values():
    levels = torch.tensor([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0])
    fig = plots.level_occupancy(levels, torch.tensor([3, 3, 2, 4, 0]), "t")
    assert fig.get_figwidth() == 10.0
    assert fig.axes[0].get_xlim()[0] < -1.0 and fig.axes[0].get_xlim()[1] > 1.0  # the level values, not indices


def test_quality_vs_bits_shows_intervals_and_one_style_per_method():
    import pandas as pd

    rows = [{"run": "fp32", "method": "fp32", "weight_bits": 32, "sampled100 NDCG@10": 0.6}]
    for method in ("ste", "lsq", "pact", "dorefa", "apot", "adaround"):
        for bits in (8, 4, 2):
            rows.append({"run": f"{method}_w{bits}a8", "method": method, "weight_bits": bits, "FP32 start": 0.2,
                         "% of FP32": 99.0, "Δ NDCG@10": -0.002, "CI low": -0.004, "CI high": 0.0,
                         "sampled100 NDCG@10": 0.59})
    fig = plots.quality_vs_bits(pd.DataFrame(rows).set_index("run"), "t")
    left, right = fig.axes
    labels = left.get_legend_handles_labels()[1]
    methods = ["ste", "lsq", "pact", "dorefa", "apot", "adaround"]
    assert sorted(labels) == sorted([*methods, "FP32"])
    assert left.get_ylabel() and left.get_xlabel() and right.get_ylabel()
    assert len({str(plots.METHOD_STYLE[m]) for m in methods}) == 6, "every method its own colour and marker"
    bars = [c for c in left.containers if hasattr(c, "has_yerr") and c.has_yerr]
    assert len(bars) == 6, "each method's paired interval drawn"
    low, high = bars[0].lines[2][0].get_segments()[0][:, 1]  # the first error bar: 100 * (1 + CI / start)
    assert low == pytest.approx(98.0) and high == pytest.approx(100.0)


def test_clipped_fractions_label_small_shares_in_percent():
    fig = plots.clipped_fractions({"blocks.0.a_quantizer": 0.00012, "b_quantizer": 0.0, "c": 0.25}, "t")
    (ax,) = all_labelled(fig, 1)
    assert "%" in ax.get_ylabel()
    assert [t.get_text() for t in ax.texts] == ["0.012 %", "0 %", "25 %"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b0.a", "b", "c"]
    assert "nothing clipped" in plots.clipped_fractions({"a": 0.0}, "t").axes[0].get_title()


def test_scale_trajectories_draw_every_quantizer_and_name_the_groups():
    scales = {f"blocks.{b}.{part}.weight_quantizer": [1.0, 1.0 + 0.01 * (2 * b + k), 1.0 + 0.02 * (2 * b + k)]
              for b in range(2) for k, part in enumerate(("q", "k", "v", "o", "fc1", "fc2", "x"))}  # 14, as SASRec
    scales |= {"embed_out": [2.0, 1.5, 1.0], "head_input": [1.0, 1.1, 1.2], "blocks.0.ffn.fc2.input_quantizer": [3.0,
                                                                                                             3.0, 3.3]}
    fig = plots.scale_trajectories(scales, "t", best_epoch=2)
    weight, act = all_labelled(fig, 2)
    assert fig.get_suptitle() == "t"
    for ax, n in ((weight, 14), (act, 3)):
        assert ax.get_title().startswith(f"{n} ")
        grey = [line for line in ax.get_lines() if line.get_color() == "0.7"]
        assert len(grey) == n, "every quantizer drawn, none dropped"
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels[:2] == [f"each of the {n} (grey)", "median"] and labels[-1].startswith("kept: epoch 2")
    assert "block 1.x.weight" in [t.get_text() for t in weight.get_legend().get_texts()]  # moved most: named
    only_weights = plots.scale_trajectories({"a.weight_quantizer": [1.0, 1.1]}, "t")
    assert len(drawn_axes(only_weights)) == 1  # no activation quantizer: that panel is switched off


def test_grid_overview_draws_each_setting_and_method():
    import pandas as pd

    rows = [(setting, method, pct) for setting, base in (("W8E8A8", 100.0), ("W4E4A8", 97.0), ("W2E2A8", 80.0))
            for method, pct in (("lsq", base), ("pact", base - 1), ("rtn_absmax", base - 10))]
    summary = pd.DataFrame([{"setting": s, "method": m, "seeds": 1 if m == "rtn_absmax" else 3, "% of FP32": p,
                             "min %": p - (0 if m == "rtn_absmax" else 1), "max %": p + (0 if m == "rtn_absmax" else 1)}
                            for s, m, p in rows if (s, m) != ("W2E2A8", "pact")]).set_index(["setting", "method"])
    fig = plots.grid_overview(summary, ["rtn_absmax"], "t")
    (ax,) = all_labelled(fig, 1)
    assert ax.get_title() == "t"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["W8E8A8", "W4E4A8", "W2E2A8"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]  # one entry per method, and FP32
    assert sorted(legend) == sorted(["lsq", "pact", "rtn_absmax (post-training)", "FP32"])
    bars = [c for c in ax.containers if c.has_yerr]
    assert len(bars) == 3, "a seed range for every method"


def test_every_figure_function_is_drawn_by_a_test():
    import inspect
    from pathlib import Path

    source = Path(__file__).read_text()
    public = [n for n, f in inspect.getmembers(plots, inspect.isfunction)
              if f.__module__ == plots.__name__ and not n.startswith("_")]
    assert [n for n in public if f"plots.{n}(" not in source] == []


def test_quality_vs_size_marks_the_pareto_front():
    import pandas as pd

    summary = pd.DataFrame([
        {"setting": "W8E8A8", "method": "lsq", "% of FP32": 100.0, "min %": 99.0, "max %": 101.0, "model MB": 0.4},
        {"setting": "W4E4A8", "method": "lsq", "% of FP32": 98.0, "min %": 97.0, "max %": 99.0, "model MB": 0.2},
        {"setting": "W4E4A8", "method": "rtn_absmax", "% of FP32": 90.0, "min %": 90.0, "max %": 90.0,
         "model MB": 0.2},
        {"setting": "W2E2A8", "method": "pact", "% of FP32": 95.0, "min %": 94.0, "max %": 96.0, "model MB": 0.1},
    ]).set_index(["setting", "method"])
    fig = plots.quality_vs_size(summary, "t")
    ax = fig.axes[0]
    front = next(line for line in ax.get_lines() if line.get_label() == "Pareto front")
    assert list(front.get_xdata()) == [0.1, 0.2, 0.4] and list(front.get_ydata()) == [95.0, 98.0, 100.0]
    assert ax.get_xlabel() and ax.get_ylabel() and "rtn_absmax" in ax.get_legend_handles_labels()[1]


def test_against_ptq_draws_the_method_with_its_seed_range_and_each_post_training_row():
    import pandas as pd

    table = pd.DataFrame({"lsq %": [100.0, 90.0], "min %": [100.0, 85.0], "max %": [100.0, 95.0], "seeds": [1, 3],
                          "rtn_absmax %": [99.0, 60.0], "rtn_mse %": [99.5, 80.0], "adaround %": [99.8, 82.0]},
                         index=pd.Index(["W8E8A8", "W2E2A8"], name="setting"))
    ax = plots.against_ptq(table, "lsq").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["W8E8A8", "W2E2A8"]
    assert {"lsq (seed range)", "rtn_absmax", "rtn_mse", "adaround", "FP32"} <= set(ax.get_legend_handles_labels()[1])
    assert ax.get_ylim()[0] == pytest.approx(55.0) and ax.get_ylabel()
