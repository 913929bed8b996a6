"""scripts/sweep_qat_length.py: how it compares QAT lengths and rates on validation."""
import importlib.util
from pathlib import Path

import pytest

from sasrec_nb.config import get_profile

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("sweep", ROOT / "scripts" / "sweep_qat_length.py")
sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep)


def run(method, lr, best, bits=4):
    return {"method": method, "bits": bits, "embed_bits": bits, "epochs": 6, "qat_lr": lr, "windows": "last",
            "distill": 0.0, "valid_ndcg@10": [best - 0.01, best]}


def test_settings_are_compared_on_the_cases_every_setting_ran():
    profile = get_profile("quick")
    # lr 3e-3 ran for three methods, lr 3e-4 (appended) for two: pact must not pull 3e-3's mean down
    runs = [run("ste", 3e-3, 0.19), run("lsq", 3e-3, 0.19), run("pact", 3e-3, 0.10),
            run("ste", 3e-4, 0.18), run("lsq", 3e-4, 0.18)]
    means = sweep.mean_best_by_setting(runs, profile)
    assert means == {"6 epochs, lr 0.0003": pytest.approx(0.18), "6 epochs, lr 0.003": pytest.approx(0.19)}
    assert max(means, key=means.get) == "6 epochs, lr 0.003"


def test_an_older_sweep_without_table_bits_still_summarizes():
    old = [{k: v for k, v in run("lsq", lr, best, bits=2).items() if k != "embed_bits"}
           for lr, best in ((1e-4, 0.13), (3e-4, 0.15))]
    assert sweep.mean_best_by_setting(old, get_profile("quick")) == {
        "6 epochs, lr 0.0001": pytest.approx(0.13), "6 epochs, lr 0.0003": pytest.approx(0.15)}


def test_settings_with_no_case_in_common_are_refused():
    with pytest.raises(SystemExit, match="--append"):
        sweep.mean_best_by_setting([run("ste", 3e-3, 0.19), run("lsq", 3e-4, 0.18)], get_profile("quick"))
