"""Results tables from results JSON: seeds summarised per grid row, paired comparisons with the PTQ rows."""
import json

import pytest

from sasrec_nb import config, report


def result(run, method, wb, eb, ab, ndcg, seed=None, ci=(-0.01, 0.01), vs_ptq=None) -> dict:
    out = {"run": run, "method": method, "weight_bits": wb, "act_bits": ab, "embed_bits": eb, "seed": seed,
           "test": {p: {"ndcg@10": ndcg, "hit@10": 2 * ndcg} for p in ("full", "sampled100")}, "n_users": 100,
           "model_bytes": 1000 * (wb or 32), "train_seconds": 1.0, "seconds_per_epoch": 1.0, "epochs": 1,
           "cpu": "test CPU"}
    if method != "fp32":
        out["vs_fp32"] = {"full": {"fp32_ndcg@10": 0.2, "ratio": ndcg / 0.2,
                                   "diff_ndcg@10": {"mean": ndcg - 0.2, "ci95_low": ci[0], "ci95_high": ci[1]}}}
    if vs_ptq:
        out["vs_ptq"] = {name: {"full": {"ptq_ndcg@10": 0.1, "diff_ndcg@10": {"mean": (lo + hi) / 2,
                                                                            "ci95_low": lo, "ci95_high": hi}}}
                         for name, (lo, hi) in vs_ptq.items()}
    return out


@pytest.fixture()
def table(tmp_path):
    runs = [result("fp32", "fp32", None, None, None, 0.2),
            result("rtn_absmax_w2e2a8", "rtn_absmax", 2, 2, 8, 0.12),
            result("lsq_w2e2a8", "lsq", 2, 2, 8, 0.18, seed=42, vs_ptq={"rtn_absmax": (0.05, 0.07)}),
            result("lsq_w2e2a8_seed43", "lsq", 2, 2, 8, 0.17, seed=43, vs_ptq={"rtn_absmax": (0.04, 0.06)}),
            result("lsq_w2e2a8_seed44", "lsq", 2, 2, 8, 0.19, seed=44, vs_ptq={"rtn_absmax": (-0.01, 0.08)}),
            result("pact_w2e2a8", "pact", 2, 2, 8, 0.185, seed=42, vs_ptq={"rtn_absmax": (0.06, 0.07)}),
            result("pact_w2e2a8_seed43", "pact", 2, 2, 8, 0.19, seed=43, vs_ptq={"rtn_absmax": (0.06, 0.08)}),
            result("lsq_w8a8", "lsq", 8, 8, 8, 0.2, seed=42)]
    for r in runs:
        (tmp_path / f"{r['run']}.json").write_text(json.dumps(r))
    return report.load_results(config.get_profile("quick"), tmp_path)


def test_load_results_orders_rows_and_reads_every_comparison(table):
    assert list(table.index[:2]) == ["fp32", "rtn_absmax_w2e2a8"]
    assert list(table.index[table["method"] == "lsq"]) == ["lsq_w8a8", "lsq_w2e2a8", "lsq_w2e2a8_seed43",
                                                          "lsq_w2e2a8_seed44"]
    assert table.loc["lsq_w2e2a8", "vs rtn_absmax low"] == 0.05 and table.loc["lsq_w2e2a8", "FP32 start"] == 0.2
    assert table.loc["fp32", "embed_bits"] == 32 and table.loc["lsq_w2e2a8", "embed_bits"] == 2


def test_seed_summary_gives_mean_range_every_interval_and_the_worst_seed_against_ptq(table):
    summary = report.seed_summary(table)
    lsq = summary.loc[("W2E2A8", "lsq")]
    assert lsq["seeds"] == 3 and lsq["% of FP32"] == pytest.approx(90.0)
    assert (lsq["min %"], lsq["max %"]) == (pytest.approx(85.0), pytest.approx(95.0))
    assert lsq["intervals"].count(";") == 2
    assert lsq["vs rtn_absmax CI"] == "[-0.0100, +0.0800]" and not lsq["above rtn_absmax"]  # one seed's contains zero
    assert summary.loc[("W2E2A8", "pact"), "above rtn_absmax"]
    assert "vs rtn_absmax" not in summary.columns or summary.loc[("W8E8A8", "lsq")].isna()["vs rtn_absmax"]


def test_methods_whose_seed_ranges_overlap_are_not_ranked(table):
    summary = report.seed_summary(table)
    assert not report.separated(summary, "W2E2A8", "lsq", "pact")  # 85–95 % against 92.5–95 %
    assert report.separated(summary, "W2E2A8", "pact", "rtn_absmax")


def test_against_ptq_puts_each_setting_of_a_method_beside_the_post_training_rows(table):
    summary = report.seed_summary(table)
    lsq = report.against_ptq(summary, "lsq")
    assert list(lsq.index) == ["W2E2A8"]  # W8E8A8 has no post-training row in this table
    assert lsq.loc["W2E2A8", "lsq %"] == pytest.approx(90.0)
    assert lsq.loc["W2E2A8", "rtn_absmax %"] == pytest.approx(60.0)
    assert lsq.loc["W2E2A8", "seeds"] == 3 and lsq.loc["W2E2A8", "above rtn_absmax"] is False
    text = report.against_ptq_text(report.against_ptq(summary, "pact"), "pact", "W2E2A8")
    assert text.startswith("At W2E2A8 pact keeps 93.8 % of FP32 (seeds 92.5–95.0 %), against rtn_absmax 60.0 %; the "
                           "best post-training row there is rtn_absmax.")
    assert text.endswith("Every seed's paired 95 % interval lies above rtn_absmax.")
    assert "No post-training row is beaten" in report.against_ptq_text(lsq, "lsq", "W2E2A8")
    with pytest.raises(ValueError, match="no run of .apot. beside a post-training row.*--all"):
        report.against_ptq(summary, "apot")


def test_summary_markdown_has_one_line_per_setting_and_method(table):
    text = report.summary_markdown(report.seed_summary(table))
    lines = text.splitlines()
    assert lines[0].startswith("| setting | method | seeds | % of FP32 | seed range |") and len(lines) == 2 + 4
    lsq = next(line for line in lines if line.startswith("| W2E2A8 | lsq |"))
    assert "| 3 | 90.0 | 85.0–95.0 |" in lsq and "+0.0350 [-0.0100, +0.0800]" in lsq


def test_sweep_table_pivots_the_runs_by_their_settings():
    key = lambda b, rule, lr: json.dumps({"act_bits": b, "pact_alpha_rule": rule, "pact_alpha_lr": lr})  # noqa: E731
    sweep = {"runs": {key(2, "mse", 0.1): {"valid_ndcg@10": 0.09}, key(2, "absmax", 0.1): {"valid_ndcg@10": 0.0},
                      key(8, "mse", 0.1): {"valid_ndcg@10": 0.11}, key(8, "absmax", 0.1): {"valid_ndcg@10": 0.12}}}
    table = report.sweep_table(sweep, rows="act_bits", columns=("pact_alpha_rule", "pact_alpha_lr"))
    assert list(table.index) == [2, 8]
    assert table.loc[2, ("mse", 0.1)] == 0.09 and table.loc[8, ("absmax", 0.1)] == 0.12


def test_kept_epochs_counts_each_runs_best_epoch(table):
    runs = table.copy()
    runs.loc[runs["method"] == "lsq", "best epoch"] = [1, 3, 3, 1]
    runs.loc[runs["method"] == "lsq", "epochs"] = 4
    assert report.kept_epochs(runs, "lsq") == ("Over the 4 lsq runs of the comparison grid (4 QAT epochs each) the kept "
                                               "epoch was epoch 1 in 2 and epoch 3 in 2.")
    with pytest.raises(ValueError, match="no run of 'apot'"):
        report.kept_epochs(runs, "apot")


def test_target_check_reads_the_best_qat_mean_and_every_seed_against_abs_max(table):
    summary = report.seed_summary(table)
    checks = report.target_check(summary, {"W2E2A8": 93.0, "W4E4A4": 97.0})
    w2 = checks.loc["W2E2A8"]
    assert w2["best"] == "pact" and w2["best %"] == pytest.approx(93.75) and w2["met"]
    assert w2["every QAT above rtn_absmax"] is False  # one LSQ seed's interval against abs-max contains zero
    assert not checks.loc["W4E4A4", "ran"]
    text = report.target_text(checks)
    assert "- **W2E2A8** (best QAT ≥ 93 % of FP32): highest QAT mean pact 93.8 %, seeds 92.5–95.0; met." in text
    assert text.endswith("- **W4E4A4** (best QAT ≥ 97 % of FP32): not run.")
    assert "excluding zero: **missed**." in text
    missed = report.target_text(report.target_check(summary, {"W2E2A8": 95.0}))
    assert "**missed** by 1.2 points" in missed


def test_control_text_reports_the_fine_tuning_control_and_how_many_intervals_exclude_zero(tmp_path, monkeypatch):
    profile = config.get_profile("quick")
    monkeypatch.setattr(report, "results_dir", lambda _: tmp_path)
    assert "has not run: python -m sasrec_nb.train --profile quick --method fp32_ft" in report.control_text(
        report.load_controls(profile), "quick")
    (tmp_path / "controls").mkdir()
    for run, ndcg, ci, seed in (("fp32_ft", 0.204, (0.001, 0.007), 42), ("fp32_ft_seed43", 0.202, (-0.002, 0.006), 43)):
        (tmp_path / "controls" / f"{run}.json").write_text(json.dumps(result(run, "fp32_ft", None, None, None, ndcg,
                                                                             seed=seed, ci=ci)))
    text = report.control_text(report.load_controls(profile), "quick")
    assert "keeps 101.5 % of FP32, seeds 101.0–102.0" in text and "(1 of 2 exclude zero)" in text
    assert "[+0.0010, +0.0070]; [-0.0020, +0.0060]" in text and "(+1.5 points)" in text


def test_control_text_reads_each_rate_of_the_control_apart(tmp_path, monkeypatch):
    profile = config.get_profile("quick")
    monkeypatch.setattr(report, "results_dir", lambda _: tmp_path)
    (tmp_path / "controls").mkdir()
    for run, ndcg, lr, seed in (("fp32_ft", 0.200, 2e-4, 42), ("fp32_ft_lr0.003", 0.196, 3e-3, 42),
                                ("fp32_ft_lr0.003_seed43", 0.194, 3e-3, 43)):
        out = {**result(run, "fp32_ft", None, None, None, ndcg, seed=seed, ci=(-0.02, -0.001)),
               "settings": {"qat_lr": lr}}
        (tmp_path / "controls" / f"{run}.json").write_text(json.dumps(out))
    text = report.control_text(report.load_controls(profile), "quick")
    assert "no quantizer at lr 0.0002; 1 run) keeps 100.0 % of FP32, paired" in text and "(+0.0 points)" in text
    assert ("At the rate of the low-bit rows, lr 0.003, the control (`fp32_ft_lr0.003`; 2 runs) keeps 97.5 % of FP32, "
            "seeds 97.0–98.0") in text and "(every one excludes zero): -2.5 points from the training alone." in text


def test_best_against_ptq_names_the_best_rows_and_the_supported_gain(table):
    gains = report.best_against_ptq(report.seed_summary(table))
    assert list(gains.index) == ["W2E2A8"]  # W8E8A8 has no post-training row here
    row = gains.loc["W2E2A8"]
    assert (row["qat"], row["ptq"], row["seeds"], row["ties"]) == ("pact", "rtn_absmax", 2, ["lsq"])
    assert abs(row["gain"] - (93.75 - 60.0)) < 1e-9 and row["supported"] is True  # both PACT seeds lie above
    text = report.best_against_ptq_text(gains)
    assert ("- **W2E2A8**: best trained pact 93.8 % (seeds 92.5–95.0), best post-training rtn_absmax 60.0 %: "
            "+33.8 points; every seed's interval lies above it; not ranked against lsq (seed ranges overlap).") in text
    assert text.endswith("The largest gain that every seed's interval supports is at **W2E2A8**: pact +33.8 points "
                         "over rtn_absmax (2 seeds).")


def test_rate_by_width_compares_rates_on_the_methods_that_ran_each():
    def run(method, bits, lr, best, epochs=6, distill=0.0):
        return {"method": method, "bits": bits, "embed_bits": bits, "epochs": epochs, "qat_lr": lr, "distill": distill,
                "valid_ndcg@10": [best / 2, best]}
    two = {"fp32_valid_ndcg@10": 0.2, "runs": [run("lsq", 2, 3e-4, 0.10), run("lsq", 2, 3e-3, 0.12),
                                               run("lsq", 2, 3e-3, 0.16, epochs=12),  # another length: left out
                                               run("lsq", 2, 3e-4, 0.19, distill=0.5)]}  # distilled: left out
    eight = {"fp32_valid_ndcg@10": 0.4, "runs": [run("ste", 8, 3e-4, 0.40), run("ste", 8, 3e-3, 0.38),
                                                 run("lsq", 8, 3e-4, 0.38), run("lsq", 8, 3e-3, 0.36),
                                                 run("pact", 8, 3e-3, 0.10)]}  # one rate only: left out
    table = report.rate_by_width([two, eight], epochs=6)
    assert list(table.index) == ["W8E8A8", "W2E2A8"] and list(table.columns) == [3e-4, 3e-3, "methods"]
    assert table.loc["W8E8A8", 3e-4] == pytest.approx(97.5) and table.loc["W8E8A8", 3e-3] == pytest.approx(92.5)
    assert table.loc["W2E2A8", 3e-4] == pytest.approx(50.0) and table.loc["W2E2A8", 3e-3] == pytest.approx(60.0)
    assert table.loc["W8E8A8", "methods"] == "lsq, ste" and table.loc["W2E2A8", "methods"] == "lsq"
