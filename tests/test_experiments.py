"""The run cache (checkpoints, histories) and the command that writes the results of record (DESIGN §6),
on a tiny SASRec-format file."""
import json
from dataclasses import replace

import pytest
import torch

from sasrec_nb import config, experiments, grid, report, train, training
from sasrec_nb.quant import adaround, ranges
from sasrec_nb.data import dataset_slug, synthetic


SCHEMA = {"run", "method", "weight_bits", "act_bits", "embed_bits", "seed", "dataset", "profile", "test", "n_users",
          "model_bytes", "train_seconds", "seconds_per_epoch", "epochs", "device", "torch", "command", "settings"}


@pytest.fixture()
def home(tmp_path, monkeypatch):
    data = synthetic(num_users=120, num_items=80, mean_len=12, seed=3)
    path = tmp_path / "toy.txt"
    path.write_text("".join(f"{u + 1} {i}\n" for u, seq in enumerate(data.sequences) for i in seq))
    monkeypatch.setenv("SASREC_NB_HOME", str(tmp_path))
    monkeypatch.setenv("SASREC_NB_DATASET", str(path))
    monkeypatch.delenv("SASREC_NB_CHECKPOINTS", raising=False)
    experiments._split.cache_clear()
    return tmp_path


def slug(home) -> str:
    return dataset_slug(str(home / "toy.txt"))


def tiny_profile():
    return config.get_profile("quick", embed_dim=16, num_heads=2, num_blocks=1, max_len=10, epochs=2,
                              eval_every=1, batch_size=32, qat_epochs=1, calib_sequences=64, num_negatives=20,
                              adaround_iters=10)


@pytest.fixture()
def tiny_quick(monkeypatch):
    """The CLI's ``quick`` profile replaced by the tiny one."""
    profile = tiny_profile()
    monkeypatch.setitem(config.PROFILES, "quick", profile)
    return profile


def test_runs_cache_checkpoints_and_write_no_results(home):
    """What a notebook calls: checkpoints and histories in the (git-ignored) cache, nothing under results/."""
    profile = tiny_profile()
    model, history = experiments.fp32_model(profile)
    ckpt = home / "checkpoints" / slug(home) / "quick"
    assert (ckpt / "fp32.pt").exists() and (ckpt / "fp32.json").exists()
    again, history2 = experiments.fp32_model(profile)  # loaded, not retrained
    assert history2["epochs"] == history["epochs"]
    seqs = experiments.load_split(profile).test.inputs[:8]
    assert not model.training and not again.training  # ready to score: no dropout
    assert torch.equal(model.scores(seqs), again.scores(seqs))

    qmodel, qhistory = experiments.qat_model(profile, "lsq", 4, 8)
    assert set(qhistory["quantizer_scales"]) == set(qhistory["quantizer_stats"])
    assert all(len(v) == 2 for v in qhistory["quantizer_scales"].values())  # after calibration + 1 epoch
    reloaded, _ = experiments.qat_model(profile, "lsq", 4, 8)
    assert not qmodel.training and not reloaded.training
    assert torch.allclose(qmodel.scores(seqs), reloaded.scores(seqs))
    assert not (home / "results").exists()
    assert not list(ckpt.glob("*.part")) and not list(ckpt.glob(".*.part"))  # no temporary file left


def test_checkpoint_folder_follows_its_variable(home, tmp_path_factory, monkeypatch):
    elsewhere = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("SASREC_NB_CHECKPOINTS", str(elsewhere))
    experiments.fp32_model(tiny_profile())
    assert (elsewhere / slug(home) / "quick" / "fp32.pt").exists() and not (home / "checkpoints").exists()


def test_adaround_run_reloads_identically(home):
    profile = tiny_profile()
    qmodel, rep = experiments.adaround_model(profile, 4, 8)
    assert "layers" in rep and rep["seconds"] > 0
    reloaded, _ = experiments.adaround_model(profile, 4, 8)
    seqs = experiments.load_split(profile).test.inputs[:8]
    assert not qmodel.training and not reloaded.training
    assert torch.equal(qmodel.scores(seqs), reloaded.scores(seqs))


def test_cli_writes_the_results_of_record_then_skips_them(home, tiny_quick, capsys):
    assert train.main(["--method", "lsq", "--bits", "4"]) == 0
    folder = home / "results" / slug(home) / "quick"
    result = json.loads((folder / "fp32.json").read_text())
    assert SCHEMA <= set(result) and set(result["test"]) == {"full", "sampled100"}
    assert {"ndcg@5", "ndcg@10", "ndcg@20", "hit@10"} <= set(result["test"]["full"])
    assert result["settings"] == {k: getattr(tiny_quick, k) for k in config.FP32_FIELDS}
    q = json.loads((folder / "lsq_w4a8.json").read_text())
    assert q["run"] == "lsq_w4a8" and q["weight_bits"] == 4 and q["act_bits"] == 8 and q["embed_bits"] == 8
    assert q["model_bytes"] < result["model_bytes"]
    vs = q["vs_fp32"]["full"]
    assert vs["diff_ndcg@10"]["ci95_low"] <= vs["diff_ndcg@10"]["mean"] <= vs["diff_ndcg@10"]["ci95_high"]
    out = capsys.readouterr().out
    assert "lsq_w4a8: done in" in out and f"-> results/{slug(home)}/quick/lsq_w4a8.json" in out
    table = report.load_results(tiny_quick, folder)
    assert list(table.index) == ["fp32", "lsq_w4a8"]
    assert "| lsq_w4a8 | lsq | 4 | 8 |" in report.markdown_table(table)

    assert train.main(["--method", "fp32"]) == 0
    assert f"fp32: results exist (results/{slug(home)}/quick/fp32.json)" in capsys.readouterr().out


def test_runs_at_low_bits_fine_tune_at_the_low_bit_rate_and_record_it(home, monkeypatch):
    """config.qat_recipe: weights or tables at ≤ low_bits train at qat_lr_low_bits, others at qat_lr; the run's
    checkpoint and results record the rate it used, so changing one rate makes only its own runs stale."""
    profile = replace(tiny_profile(), qat_lr_low_bits=1e-3, low_bits=2)
    monkeypatch.setitem(config.PROFILES, "quick", profile)
    assert train.main(["--method", "lsq", "--bits", "2", "4", "--embed-bits", "8"]) == 0
    assert train.main(["--method", "lsq", "--bits", "8", "--embed-bits", "2"]) == 0
    folder, cache = home / "results" / slug(home) / "quick", home / "checkpoints" / slug(home) / "quick"
    rate = {run: json.loads((folder / f"{run}.json").read_text())["settings"]["qat_lr"]
            for run in ("lsq_w2a8", "lsq_w4a8", "lsq_w8e2a8")}
    assert rate == {"lsq_w2a8": 1e-3, "lsq_w4a8": profile.qat_lr, "lsq_w8e2a8": 1e-3}
    assert training.read_checkpoint(cache / "lsq_w2a8.pt")["meta"]["profile"]["qat_lr"] == 1e-3
    monkeypatch.setattr(experiments, "fit", lambda *a, **k: pytest.fail("retrained a cached run"))
    experiments.qat_model(profile, "lsq", 2, 8)  # the cache holds the run at the low-bit rate: loaded
    assert train.main(["--method", "lsq", "--bits", "2", "4"]) == 0  # the results hold their own rates: not stale
    monkeypatch.setitem(config.PROFILES, "quick", replace(profile, qat_lr_low_bits=2e-3))
    assert train.main(["--method", "lsq", "--bits", "4"]) == 0  # the 4-bit run's rate did not change
    with pytest.raises(SystemExit, match=r"lsq_w2a8\.json was produced with other settings(.|\n)*"
                                         r"qat_lr: 0\.001 -> 0\.002"):
        train.main(["--method", "lsq", "--bits", "2"])


def test_the_control_at_the_low_bit_rate_is_a_run_of_its_own(home, monkeypatch):
    profile = replace(tiny_profile(), qat_lr_low_bits=1e-3)
    monkeypatch.setitem(config.PROFILES, "quick", profile)
    assert train.main(["--method", "fp32_ft", "--bits", "8", "2"]) == 0
    folder = home / "results" / slug(home) / "quick" / "controls"
    names = sorted(p.name for p in folder.glob("*.json"))
    assert names == ["fp32_ft.json", "fp32_ft_lr0.001.json"]
    assert [json.loads((folder / n).read_text())["settings"]["qat_lr"] for n in names] == [profile.qat_lr, 1e-3]
    monkeypatch.setattr(experiments, "fit", lambda *a, **k: pytest.fail("retrained a cached run"))
    usual, _ = experiments.finetuned_fp32(profile)
    faster, _ = experiments.finetuned_fp32(profile, qat_lr=1e-3)
    assert not torch.equal(usual.item_emb.weight, faster.item_emb.weight)
    assert report.load_controls(profile)["QAT lr"].tolist() == [profile.qat_lr, 1e-3]


def test_qat_recipe_swaps_the_rate_only_at_low_bits():
    base = tiny_profile()
    assert config.qat_recipe(base, 2) is base  # no low-bit rate: one rate everywhere
    low = replace(base, qat_lr_low_bits=3e-3, low_bits=3)
    assert [config.qat_recipe(low, b).qat_lr for b in (8, 4, 3, 2)] == [base.qat_lr, base.qat_lr, 3e-3, 3e-3]
    assert config.qat_recipe(replace(low, embed_bits=3), 8).qat_lr == 3e-3  # the tables count too
    assert config.qat_recipe(config.qat_recipe(low, 2), 2) == config.qat_recipe(low, 2)
    with pytest.raises(ValueError, match="qat_lr_low_bits must be ≥ 0"):
        replace(base, qat_lr_low_bits=-1.0)
    with pytest.raises(ValueError, match="low_bits must be a whole number of bits"):
        replace(base, low_bits=0)


def test_cli_writes_missing_results_from_a_cached_checkpoint(home, tiny_quick, monkeypatch):
    """A checkpoint whose results JSON was deleted (or never written): the CLI writes it from the checkpoint."""
    experiments.fp32_model(tiny_quick)
    monkeypatch.setattr(experiments, "fit", lambda *a, **k: pytest.fail("retrained a cached run"))
    assert train.main(["--method", "fp32"]) == 0
    result = home / "results" / slug(home) / "quick" / "fp32.json"
    assert json.loads(result.read_text())["run"] == "fp32"


def test_cli_refuses_results_produced_with_other_settings(home, tiny_quick, monkeypatch):
    train.main(["--method", "fp32"])
    monkeypatch.setitem(config.PROFILES, "quick", replace(tiny_quick, dropout=0.3))
    with pytest.raises(SystemExit, match=rf"results/{slug(home)}/quick/fp32\.json was produced with other settings"
                                         r"(.|\n)*dropout: 0\.2 -> 0\.3\n  redo it with --force"):
        train.main(["--method", "fp32"])
    path = home / "results" / slug(home) / "quick" / "fp32.json"
    old = json.loads(path.read_text())
    del old["settings"]
    path.write_text(json.dumps(old))
    with pytest.raises(SystemExit, match="does not record the settings it was produced with"):
        train.main(["--method", "fp32"])


def test_cli_refuses_results_from_another_fp32_model(home, tiny_quick):
    """Every results file records the FP32 weights it started from; one from other weights than the cached FP32 model
    (e.g. a retrained one) is refused, so that a table never mixes runs of two FP32 models."""
    assert train.main(["--method", "lsq", "--bits", "4"]) == 0
    folder = home / "results" / slug(home) / "quick"
    digest = experiments.start_of(experiments.fp32_model(tiny_quick)[0], "fp32")["fp32"]
    assert json.loads((folder / "fp32.json").read_text())["start"]["fp32"] == digest
    assert json.loads((folder / "lsq_w4a8.json").read_text())["start"]["fp32"] == digest
    path = folder / "lsq_w4a8.json"
    result = json.loads(path.read_text())
    result["start"]["fp32"] = "0" * 16
    path.write_text(json.dumps(result))
    with pytest.raises(SystemExit, match=r"lsq_w4a8\.json started from other FP32 weights(.|\n)*--force"):
        train.main(["--method", "lsq", "--bits", "4"])


def test_fp32_weights_of_record_travel_with_the_results(home, monkeypatch):
    """A profile with ``fp32_of_record`` commits its FP32 checkpoint beside its results, and a fresh cache (another
    machine, whose FP32 training would differ) loads those weights instead of training; weights that do not match
    the results' digest are refused."""
    profile = replace(tiny_profile(), fp32_of_record=True)
    monkeypatch.setitem(config.PROFILES, "quick", profile)
    assert train.main(["--method", "fp32"]) == 0
    folder = home / "results" / slug(home) / "quick"
    digest = json.loads((folder / "fp32.json").read_text())["start"]["fp32"]
    assert experiments.weights_digest(training.read_checkpoint(folder / "fp32.pt")["state_dict"]) == digest
    cache = home / "checkpoints" / slug(home) / "quick"
    for f in cache.iterdir():
        f.unlink()
    monkeypatch.setattr(experiments, "fit", lambda *a, **k: pytest.fail("trained instead of loading the record"))
    model, _ = experiments.fp32_model(profile)
    assert experiments.weights_digest(model.state_dict()) == digest and (cache / "fp32.pt").exists()
    (cache / "fp32.pt").unlink()
    result = json.loads((folder / "fp32.json").read_text())
    result["start"]["fp32"] = "0" * 16
    (folder / "fp32.json").write_text(json.dumps(result))
    with pytest.raises(ValueError, match=r"fp32\.pt holds FP32 weights with digest(.|\n)*--force"):
        experiments.fp32_model(profile)


def test_cli_names_a_corrupt_results_file(home, tiny_quick):
    train.main(["--method", "fp32"])
    path = home / "results" / slug(home) / "quick" / "fp32.json"
    path.write_text(path.read_text()[:100])  # cut short
    with pytest.raises(SystemExit, match=r"fp32\.json is not a readable results file(.|\n)*delete it"):
        train.main(["--method", "fp32"])
    with pytest.raises(ValueError, match=r"fp32\.json is not a readable results file"):
        report.load_results(tiny_quick, path.parent)


def test_cli_force_redoes_the_runs_named_not_their_fp32_base(home, tiny_quick, monkeypatch, capsys):
    train.main(["--method", "fp32"])
    calls = []
    monkeypatch.setattr(train, "run_and_record", lambda profile, run, force: calls.append((run.method, force)) or {})
    assert train.main(["--method", "lsq", "--bits", "4", "--force"]) == 0
    assert calls == [("lsq", True)] and "fp32: results exist" in capsys.readouterr().out
    assert train.main(["--method", "fp32", "--force"]) == 0
    assert calls[-1] == ("fp32", True)


@pytest.mark.parametrize("argv,message", [
    (["--method", "lsq", "--bits", "0"], "supports 2 to 16 bits"),
    (["--method", "apot", "--bits", "9"], "supports 2 to 8 bits"),
    (["--method", "ste", "--bits", "8", "1"], "supports 2 to 16 bits"),
    (["--method", "pact", "--act-bits", "1"], "supports 2 to 16 bits"),
    (["--method", "lsq", "--embed-bits", "1"], "item and position tables: .* supports 2 to 16 bits"),
    (["--method", "apot", "--embed-bits", "9"], "supports 2 to 8 bits"),
    (["--method", "lsq", "--seeds", "-1"], "seed is a whole number"),
    (["--method", "fp32", "--seeds", "1"], "--seeds applies to QAT and AdaRound runs, not fp32"),
    (["--all", "--bits", "4"], "--all runs the whole grid"),
])
def test_cli_checks_every_bit_width_before_anything_loads_or_trains(home, tiny_quick, monkeypatch, argv, message):
    monkeypatch.setattr(experiments, "load_split", lambda p: pytest.fail("loaded data before checking the bits"))
    monkeypatch.setattr(experiments, "fit", lambda *a, **k: pytest.fail("trained before checking the bits"))
    with pytest.raises(SystemExit, match=message):
        train.main(argv)
    assert not (home / "results").exists() and not (home / "checkpoints").exists()


def test_method_runs_start_with_fp32_and_name_the_profiles_seed_plainly():
    runs = grid.method_runs(["lsq", "pact"], [8, 4], 8, 8, None, tiny_profile())
    assert runs[0] == grid.FP32 and len(runs) == 5 and grid.Run("pact", 4, 8, 8) in runs
    seeded = grid.method_runs(["lsq", "rtn_mse"], [4], 8, 4, [42, 43], tiny_profile())
    assert [r.name for r in seeded] == ["fp32", "lsq_w4e4a8", "lsq_w4e4a8_seed43", "rtn_mse_w4e4a8"]


def test_the_grid_holds_every_row_with_seeds_at_low_bits():
    runs = grid.grid_runs(tiny_profile())
    names = [r.name for r in runs]
    assert names[0] == "fp32" and len(names) == len(set(names))
    for b in (8, 4, 3, 2):
        for m in ("ste", "lsq", "pact", "dorefa", "apot", "adaround", "rtn_absmax", "rtn_mse"):
            assert experiments.run_name(m, b, 8, b) in names
    assert {"lsq_w8a4", "lsq_w4e4a4", "pact_w8a3", "pact_w8a2", "lsq_w8a2"} <= set(names)
    assert "ste_w8a2" not in names  # A3 / A2 only for the methods that learn their range for it
    assert "lsq_w4e4a8_seed43" in names and "lsq_w4e4a8_seed44" in names and "adaround_w2e2a8_seed44" in names
    assert "lsq_w8a8_seed43" not in names and "rtn_mse_w2e2a8_seed43" not in names  # 8 bits, and RTN: one run
    assert names[1:4] == ["fp32_ft", "fp32_ft_seed43", "fp32_ft_seed44"]  # the control, with the grid's seeds
    assert not any(n.startswith("fp32_ft_lr") for n in names)  # one QAT rate: one control
    low = [r.name for r in grid.grid_runs(replace(tiny_profile(), qat_lr_low_bits=3e-3))]
    assert low[1:7] == ["fp32_ft", "fp32_ft_seed43", "fp32_ft_seed44",  # a control at each rate of the grid
                        "fp32_ft_lr0.003", "fp32_ft_lr0.003_seed43", "fp32_ft_lr0.003_seed44"]
    assert low[7:] == names[4:]


def test_the_control_runs_once_per_seed_and_rate_whatever_the_bits():
    runs = grid.method_runs(["fp32_ft", "lsq"], [8, 4], 8, 8, [42, 43], tiny_profile())
    assert [r.name for r in runs] == ["fp32", "fp32_ft", "fp32_ft_seed43", "lsq_w8a8", "lsq_w8a8_seed43", "lsq_w4a8",
                                      "lsq_w4a8_seed43"]
    low = replace(tiny_profile(), qat_lr_low_bits=3e-3)
    assert [r.name for r in grid.method_runs(["fp32_ft"], [2], 8, 8, None, low)] == ["fp32", "fp32_ft_lr0.003"]
    assert [r.name for r in grid.method_runs(["fp32_ft"], [8, 4, 2], 8, 8, None, low)] == [
        "fp32", "fp32_ft", "fp32_ft_lr0.003"]


def test_run_names_say_the_table_bits_and_the_seed_when_they_are_not_the_defaults():
    assert experiments.run_name("lsq", 4, 8) == "lsq_w4a8" and experiments.run_name("fp32", None, None) == "fp32"
    assert experiments.run_name("lsq", 4, 8, embed_bits=4) == "lsq_w4e4a8"
    assert experiments.run_name("pact", 2, 2, embed_bits=2, seed=43) == "pact_w2e2a2_seed43"


def test_cli_table_bits_and_seeds_make_runs_of_their_own(home, tiny_quick):
    assert train.main(["--method", "lsq", "--bits", "4", "--embed-bits", "4", "--seeds", "1", "2"]) == 0
    folder = home / "results" / slug(home) / "quick"
    one, two = (json.loads((folder / f"lsq_w4e4a8_seed{s}.json").read_text()) for s in (1, 2))
    assert one["embed_bits"] == two["embed_bits"] == 4 and (one["seed"], two["seed"]) == (1, 2)
    assert one["vs_fp32"]["full"]["fp32_ndcg@10"] == two["vs_fp32"]["full"]["fp32_ndcg@10"]  # the same FP32 start
    ckpt = home / "checkpoints" / slug(home) / "quick"
    a, b = (torch.load(ckpt / f"lsq_w4e4a8_seed{s}.pt", weights_only=True)["state_dict"] for s in (1, 2))
    assert not torch.equal(a["blocks.0.ffn.fc1.weight"], b["blocks.0.ffn.fc1.weight"])  # the seed changed QAT
    assert a["item_emb.weight_quantizer.step"].shape == b["item_emb.weight_quantizer.step"].shape
    assert sorted(p.name for p in folder.glob("*.json")) == ["fp32.json", "lsq_w4e4a8_seed1.json",
                                                             "lsq_w4e4a8_seed2.json"]


def test_a_checkpoint_trained_with_other_settings_is_refused_not_reused(home):
    experiments.fp32_model(tiny_profile())
    changed = replace(tiny_profile(), lr=5e-3, residual="port")
    with pytest.raises(ValueError, match=rf"checkpoints/{slug(home)}/quick/fp32\.pt was trained with other settings"
                                         r"(.|\n)*residual: 'paper' -> 'port'\n  lr: 0\.003 -> 0\.005(.|\n)*--force"):
        experiments.fp32_model(changed)
    qat_only = replace(tiny_profile(), qat_lr=1e-3)
    experiments.fp32_model(qat_only)  # a QAT setting does not make the FP32 run stale
    retrained, _ = experiments.fp32_model(changed, force=True)
    assert retrained.config["residual"] == "port"


def test_a_quantized_run_from_another_fp32_model_or_range_rule_is_refused_not_reused(home, monkeypatch):
    """A cached QAT or AdaRound run belongs to the FP32 weights and the range rule it started from."""
    profile = tiny_profile()
    experiments.qat_model(profile, "dorefa", 8, 8)
    experiments.adaround_model(profile, 8, 8)
    experiments.qat_model(profile, "dorefa", 8, 8)  # the same start: loaded
    before = ranges.DEFAULT["dorefa"]
    after = next(rule for rule in ranges.RULES if rule != before)
    monkeypatch.setitem(ranges.DEFAULT, "dorefa", after)
    with pytest.raises(ValueError, match=r"dorefa_w8a8\.pt was trained from another starting point(.|\n)*"
                                         rf"'act_range_rule': '{before}'(.|\n)*'act_range_rule': '{after}'(.|\n)*--force"):
        experiments.qat_model(profile, "dorefa", 8, 8)
    path = home / "checkpoints" / slug(home) / "quick" / "fp32.pt"  # other FP32 weights in the same place
    fp32, _ = experiments.fp32_model(profile)
    with torch.no_grad():
        fp32.item_emb.weight.mul_(1.01)
    training.save_checkpoint(path, fp32, training.read_checkpoint(path)["meta"])
    with pytest.raises(ValueError, match=r"adaround_w8a8\.pt was trained from another starting point"):
        experiments.adaround_model(profile, 8, 8)
    experiments.adaround_model(profile, 8, 8, force=True)
    experiments.adaround_model(profile, 8, 8)  # retrained from the new start: loaded again
    monkeypatch.setattr(adaround, "RESIDUAL_GRID", "tensor")  # AdaRound's residual branches per tensor instead
    with pytest.raises(ValueError, match=r"adaround_w8a8\.pt was trained from another starting point(.|\n)*"
                                         r"'residual_grid': 'channel'(.|\n)*'residual_grid': 'tensor'"):
        experiments.adaround_model(profile, 8, 8)


def test_qat_model_refuses_adaround_and_bad_bits_before_any_work(home, monkeypatch):
    monkeypatch.setattr(experiments, "fp32_model", lambda *a, **k: pytest.fail("loaded FP32 before checking"))
    with pytest.raises(ValueError, match="AdaRound is post-training quantization: use adaround_model"):
        experiments.qat_model(tiny_profile(), "adaround")
    with pytest.raises(ValueError, match="supports 2 to 16 bits"):
        experiments.qat_model(tiny_profile(), "lsq", 0)
    with pytest.raises(ValueError, match="a whole number"):
        experiments.qat_model(tiny_profile(), "lsq", True)
    with pytest.raises(ValueError, match="supports 2 to 16 bits"):
        experiments.adaround_model(tiny_profile(), 1, 8)


def test_a_custom_file_named_like_a_builtin_dataset_gets_its_own_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("SASREC_NB_HOME", str(tmp_path))
    custom = tmp_path / "ml-100k.txt"
    other = tmp_path / "elsewhere" / "ml-100k.txt"
    folders = {config.results_dir(replace(tiny_profile(), dataset=d)) for d in ("ml-100k", str(custom), str(other))}
    assert len(folders) == 3
    assert config.results_dir(replace(tiny_profile(), dataset="ml-100k")).parts[-2] == "ml-100k"
    assert all(f.parts[-2].startswith("file-ml-100k-") for f in folders if f.parts[-2] != "ml-100k")


def test_cli_round_to_nearest_baselines_are_recorded_without_training(home, tiny_quick, monkeypatch):
    train.main(["--method", "fp32"])
    monkeypatch.setattr(experiments, "fit", lambda *a, **k: pytest.fail("a post-training baseline trained"))
    assert train.main(["--method", "rtn_mse", "--bits", "2", "--embed-bits", "2"]) == 0
    assert train.main(["--method", "rtn_absmax", "--bits", "2", "--embed-bits", "2"]) == 0
    folder = home / "results" / slug(home) / "quick"
    mse, absmax = (json.loads((folder / f"rtn_{r}_w2e2a8.json").read_text()) for r in ("mse", "absmax"))
    assert mse["method"] == "rtn_mse" and mse["seed"] is None and mse["embed_bits"] == 2
    assert mse["settings"] == {k: getattr(tiny_quick, k) for k in config.PTQ_FIELDS} | {"embed_bits": 2}
    assert mse["model_bytes"] == absmax["model_bytes"]  # the same storage, other grids
    assert mse["test"] != absmax["test"]
    with pytest.raises(SystemExit, match="not rtn_mse"):
        train.main(["--method", "lsq", "rtn_mse", "--seeds", "1"])


def test_the_control_is_fp32_fine_tuned_with_qats_recipe_and_no_quantizer(home, monkeypatch):
    profile = tiny_profile()
    fp32, _ = experiments.fp32_model(profile)
    before = {k: v.clone() for k, v in fp32.state_dict().items()}
    tuned, history = experiments.finetuned_fp32(profile)
    assert not experiments.quantizers(tuned) and len(history["epochs"]) == profile.qat_epochs
    assert all(torch.equal(v, fp32.state_dict()[k]) for k, v in before.items())  # the FP32 model itself is untouched
    assert not torch.equal(tuned.state_dict()["blocks.0.ffn.fc1.weight"], before["blocks.0.ffn.fc1.weight"])
    monkeypatch.setattr(experiments, "fit", lambda *a, **k: pytest.fail("retrained a cached control"))
    again, _ = experiments.finetuned_fp32(profile)
    seqs = experiments.load_split(profile).test.inputs[:8]
    assert torch.equal(tuned.scores(seqs), again.scores(seqs)) and not again.training
    with pytest.raises(ValueError, match="other settings"):
        experiments.finetuned_fp32(replace(profile, qat_lr=profile.qat_lr * 2))


def test_cli_records_the_control_apart_from_the_grid(home, tiny_quick):
    assert train.main(["--method", "fp32_ft", "lsq", "--bits", "4", "--seeds", "42", "43"]) == 0
    folder = home / "results" / slug(home) / "quick"
    control = json.loads((folder / "controls" / "fp32_ft_seed43.json").read_text())
    assert SCHEMA <= set(control) and control["method"] == "fp32_ft" and control["seed"] == 43
    assert control["weight_bits"] is None and control["embed_bits"] is None and "vs_fp32" in control
    assert control["settings"] == {k: getattr(tiny_quick, k) for k in config.FINETUNE_FIELDS}
    assert set(report.load_results(tiny_quick, folder).index) == {"fp32", "lsq_w4a8", "lsq_w4a8_seed43"}
    controls = report.load_controls(tiny_quick)
    assert list(controls.index) == ["fp32_ft", "fp32_ft_seed43"]
    text = report.control_text(controls, "quick")
    assert f"keeps {controls['% of FP32'].mean():.1f} % of FP32" in text and "2 runs" in text


def test_cli_takes_several_methods(home, tiny_quick, monkeypatch):
    done = []
    monkeypatch.setattr(train, "run_and_record", lambda profile, run, force: done.append(run.name) or {})
    assert train.main(["--method", "ste", "rtn_absmax", "--bits", "8", "2"]) == 0
    assert done == ["fp32", "ste_w8a8", "rtn_absmax_w8a8", "ste_w2a8", "rtn_absmax_w2a8"]


def test_cli_all_runs_the_grid_in_order(home, tiny_quick, monkeypatch):
    done = []
    monkeypatch.setattr(train, "run_and_record", lambda profile, run, force: done.append((run, profile)) or {})
    assert train.main(["--all"]) == 0
    assert [r for r, _ in done] == grid.grid_runs(tiny_quick)
    assert all(p == tiny_quick for _, p in done)  # the CLI's profile: each run applies its own bits and rate
    assert all(train.profile_of(tiny_quick, r).embed_bits == (r.embed_bits or tiny_quick.embed_bits) for r, _ in done)


def test_a_qat_result_is_paired_with_every_post_training_run_of_its_bits(home, tiny_quick):
    assert train.main(["--method", "lsq", "--bits", "2"]) == 0
    q = json.loads((home / "results" / slug(home) / "quick" / "lsq_w2a8.json").read_text())
    assert set(q["vs_ptq"]) == {"rtn_absmax", "rtn_mse", "adaround"}
    for name, by_protocol in q["vs_ptq"].items():
        d = by_protocol["full"]["diff_ndcg@10"]
        assert d["mean"] == pytest.approx(q["test"]["full"]["ndcg@10"] - by_protocol["full"]["ptq_ndcg@10"], abs=1e-6)
        assert d["ci95_low"] <= d["mean"] <= d["ci95_high"]
