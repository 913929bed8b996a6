"""The run cache: checkpoints, histories and results JSON (DESIGN §6), on a tiny SASRec-format file."""
import json
from dataclasses import replace

import pytest
import torch

from sasrec_nb import config, experiments, report
from sasrec_nb.data import synthetic


SCHEMA = {"run", "method", "weight_bits", "act_bits", "dataset", "profile", "test", "n_users", "model_bytes",
          "train_seconds", "seconds_per_epoch", "epochs", "device", "torch", "command"}


@pytest.fixture()
def home(tmp_path, monkeypatch):
    data = synthetic(num_users=120, num_items=80, mean_len=12, seed=3)
    path = tmp_path / "toy.txt"
    path.write_text("".join(f"{u + 1} {i}\n" for u, seq in enumerate(data.sequences) for i in seq))
    monkeypatch.setenv("SASREC_NB_HOME", str(tmp_path))
    monkeypatch.setenv("SASREC_NB_DATASET", str(path))
    experiments._split.cache_clear()
    return tmp_path


def tiny_profile():
    return config.get_profile("quick", embed_dim=16, num_heads=2, num_blocks=1, max_len=10, epochs=2,
                              eval_every=1, batch_size=32, qat_epochs=1, calib_sequences=64, num_negatives=20,
                              adaround_iters=10)


def test_fp32_and_qat_runs_write_and_reuse_their_files(home):
    profile = tiny_profile()
    model, history = experiments.fp32_model(profile)
    ckpt = home / "checkpoints" / "toy" / "quick"
    assert (ckpt / "fp32.pt").exists() and (ckpt / "fp32.json").exists()
    result = json.loads((home / "results" / "toy" / "quick" / "fp32.json").read_text())
    assert SCHEMA <= set(result)
    assert set(result["test"]) == {"full", "sampled100"}
    assert {"ndcg@5", "ndcg@10", "ndcg@20", "hit@10"} <= set(result["test"]["full"])
    again, history2 = experiments.fp32_model(profile)  # loaded, not retrained
    assert history2 == json.loads((ckpt / "fp32.json").read_text()) or history2["epochs"] == history["epochs"]
    seqs = experiments.load_split(profile).test.inputs[:8]
    assert not model.training and not again.training  # ready to score: no dropout
    assert torch.equal(model.scores(seqs), again.scores(seqs))

    qmodel, qhistory = experiments.qat_model(profile, "lsq", 4, 8)
    q = json.loads((home / "results" / "toy" / "quick" / "lsq_w4a8.json").read_text())
    assert q["run"] == "lsq_w4a8" and q["weight_bits"] == 4 and q["act_bits"] == 8
    assert q["model_bytes"] < result["model_bytes"]
    vs = q["vs_fp32"]["full"]
    assert vs["diff_ndcg@10"]["ci95_low"] <= vs["diff_ndcg@10"]["mean"] <= vs["diff_ndcg@10"]["ci95_high"]
    assert set(qhistory["quantizer_scales"]) == set(qhistory["quantizer_stats"])
    assert all(len(v) == 2 for v in qhistory["quantizer_scales"].values())  # after calibration + 1 epoch
    reloaded, _ = experiments.qat_model(profile, "lsq", 4, 8)
    assert not qmodel.training and not reloaded.training
    assert torch.allclose(qmodel.scores(seqs), reloaded.scores(seqs))

    table = report.load_results(profile, home / "results" / "toy" / "quick")
    assert list(table.index) == ["fp32", "lsq_w4a8"]
    assert "| lsq_w4a8 | lsq | 4 | 8 |" in report.markdown_table(table)


def test_adaround_run_reloads_identically(home):
    profile = tiny_profile()
    qmodel, rep = experiments.adaround_model(profile, 4, 8)
    assert "layers" in rep and (home / "results" / "toy" / "quick" / "adaround_w4a8.json").exists()
    reloaded, _ = experiments.adaround_model(profile, 4, 8)
    seqs = experiments.load_split(profile).test.inputs[:8]
    assert not qmodel.training and not reloaded.training
    assert torch.equal(qmodel.scores(seqs), reloaded.scores(seqs))


@pytest.fixture()
def tiny_quick(monkeypatch):
    """The CLI's ``quick`` profile replaced by the tiny one."""
    profile = tiny_profile()
    monkeypatch.setitem(config.PROFILES, "quick", profile)
    return profile


def test_cli_trains_then_skips_existing_results(home, tiny_quick, capsys):
    experiments.fp32_model(tiny_quick)
    result = json.loads((home / "results" / "toy" / "quick" / "fp32.json").read_text())
    assert result["settings"] == {k: getattr(tiny_quick, k) for k in config.FP32_FIELDS}
    assert experiments.main(["--method", "fp32"]) == 0
    assert "fp32: results exist (results/toy/quick/fp32.json)" in capsys.readouterr().out


def test_cli_refuses_results_produced_with_other_settings(home, tiny_quick, monkeypatch):
    experiments.fp32_model(tiny_quick)
    monkeypatch.setitem(config.PROFILES, "quick", replace(tiny_quick, dropout=0.3))
    with pytest.raises(SystemExit, match=r"results/toy/quick/fp32\.json was produced with other settings(.|\n)*"
                                         r"dropout: 0\.2 -> 0\.3\n  redo it with --force"):
        experiments.main(["--method", "fp32"])
    path = home / "results" / "toy" / "quick" / "fp32.json"
    old = json.loads(path.read_text())
    del old["settings"]
    path.write_text(json.dumps(old))
    with pytest.raises(SystemExit, match="does not record the settings it was produced with"):
        experiments.main(["--method", "fp32"])


def test_cli_force_redoes_the_runs_named_not_their_fp32_base(home, tiny_quick, monkeypatch, capsys):
    experiments.fp32_model(tiny_quick)
    calls = []
    monkeypatch.setattr(experiments, "fp32_model", lambda profile, force=False: calls.append(("fp32", force)))
    monkeypatch.setattr(experiments, "qat_model", lambda profile, m, wb, ab, force=False: calls.append((m, force)))
    assert experiments.main(["--method", "lsq", "--bits", "4", "--force"]) == 0
    assert calls == [("lsq", True)] and "fp32: results exist" in capsys.readouterr().out
    assert experiments.main(["--method", "fp32", "--force"]) == 0
    assert calls[-1] == ("fp32", True)


def test_planned_runs_start_with_fp32():
    runs = experiments.planned_runs(["lsq", "pact"], [8, 4], 8)
    assert runs[0] == ("fp32", None, None) and len(runs) == 5 and ("pact", 4, 8) in runs
    assert experiments.run_name("lsq", 4, 8) == "lsq_w4a8" and experiments.run_name("fp32", 0, 0) == "fp32"


def test_a_checkpoint_trained_with_other_settings_is_refused_not_reused(home):
    experiments.fp32_model(tiny_profile())
    changed = replace(tiny_profile(), lr=5e-3, residual="port")
    with pytest.raises(ValueError, match=r"checkpoints/toy/quick/fp32\.pt was trained with other settings(.|\n)*"
                                         r"residual: 'paper' -> 'port'\n  lr: 0\.003 -> 0\.005(.|\n)*--force"):
        experiments.fp32_model(changed)
    qat_only = replace(tiny_profile(), qat_lr=1e-3)
    experiments.fp32_model(qat_only)  # a QAT setting does not make the FP32 run stale
    retrained, _ = experiments.fp32_model(changed, force=True)
    assert retrained.config["residual"] == "port"


def test_abs_range_is_percentiles_and_max_of_abs():
    x = torch.arange(-500, 500, dtype=torch.float32).reshape(10, 10, 10)  # |x| takes 0..500
    stats = experiments.abs_range(x)
    a = x.abs().flatten()
    assert stats["max"] == 500.0
    assert stats["p99"] == a.quantile(0.99).item() and stats["p999"] == a.quantile(0.999).item()
    sampled = experiments.abs_range(x, sample=100)  # percentiles on 100 of the 1,000 values, the max on all
    assert sampled["max"] == 500.0 and sampled["p99"] <= 500.0
