"""Runs that produce the course's checkpoints and results: FP32, QAT per method, AdaRound.

Each run is cached: ``checkpoints/<dataset>/<profile>/<run>.pt`` (+ ``.json`` history) and
``results/<dataset>/<profile>/<run>.json`` (the test metrics the comparison notebook and README
read; committed). A notebook asks for what it needs and gets the cached model, or the run is done.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from . import metrics
from .config import (Profile, changed_settings, checkpoint_dir, dataset_slug, device, project_root, results_dir,
                     run_fields)
from .data import REGISTRY, load_dataset
from .loaders import Split, calibration_sequences, leave_one_out
from .model import SASRec
from .quant import calibrate_activations, capture_inputs, param_groups, quantize_model, quantizers
from .quant.export import model_bytes
from .train import evaluate, fit, load_into, read_checkpoint, save_checkpoint, seed_everything, write_json


@lru_cache(maxsize=4)
def _split(dataset: str, max_len: int, num_negatives: int, seed: int) -> Split:
    return leave_one_out(load_dataset(dataset), max_len, num_negatives, seed)


def load_split(profile: Profile) -> Split:
    """The leave-one-out split of the profile's dataset (cached per process)."""
    return _split(profile.dataset, profile.max_len, profile.num_negatives, profile.seed)


def run_name(method: str, weight_bits: int, act_bits: int) -> str:
    return "fp32" if method == "fp32" else f"{method}_w{weight_bits}a{act_bits}"


def dataset_label(dataset: str) -> str:
    spec = REGISTRY.get(dataset)
    return spec.label if spec and spec.label else dataset_slug(dataset)


def command_line() -> str:
    """How this run was started, without machine paths."""
    if not sys.argv or "ipykernel" in sys.argv[0]:
        return "a notebook, executed by python scripts/execute_notebooks.py"
    return "python -m sasrec_nb.train " + " ".join(sys.argv[1:])


def record(profile: Profile, run: str, method: str, weight_bits: int | None, act_bits: int | None,
           model: nn.Module, split: Split, history: dict, command: str | None = None,
           baseline: nn.Module | None = None) -> dict:
    """The results JSON of a run (DESIGN §6), with paired differences against ``baseline``.

    ``settings`` records the profile fields the run depends on, so a later profile change is detected.
    """
    test = evaluate(model, split.test, profile.eval_batch_size, per_user=True)
    out = {
        "run": run, "method": method, "weight_bits": weight_bits, "act_bits": act_bits,
        "settings": {k: getattr(profile, k) for k in run_fields(method)},
        "embed_bits": profile.embed_bits if method != "fp32" else None,
        "dataset": dataset_label(profile.dataset), "profile": profile.name,
        "test": {p: test[p] for p in metrics.PROTOCOLS}, "n_users": test["n_users"],
        "model_bytes": model_bytes(model),
        "train_seconds": round(history.get("train_seconds", 0.0), 2),
        "seconds_per_epoch": round(history.get("seconds_per_epoch", 0.0), 3),
        "epochs": len(history.get("epochs", [])), "best_epoch": history.get("best_epoch"),
        "device": str(next(model.parameters()).device), "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "command": command or command_line(),
    }
    if baseline is not None:
        base = evaluate(baseline, split.test, profile.eval_batch_size, per_user=True)
        out["vs_fp32"] = {}
        for p in metrics.PROTOCOLS:
            a, b = base["per_user_ndcg@10"][p], test["per_user_ndcg@10"][p]
            diff = metrics.paired_difference(a, b)
            out["vs_fp32"][p] = {"fp32_ndcg@10": a.mean().item(), "ratio": b.mean().item() / a.mean().item(),
                                 "diff_ndcg@10": diff}
    return out


def cached_checkpoint(path: Path, profile: Profile, method: str, force: bool) -> dict | None:
    """The checkpoint at ``path`` (None when absent or ``force``); an error when it was trained with other settings.

    The checkpoint records the profile it was trained with; :func:`config.run_fields` names the fields that matter.
    """
    if force or not path.exists():
        return None
    ckpt = read_checkpoint(path)
    changed = changed_settings(ckpt["meta"].get("profile", {}), profile, run_fields(method))
    if changed:
        raise ValueError(f"{shown(path)} was trained with other settings than the {profile.name!r} profile has now:\n  "
                         + "\n  ".join(changed)
                         + f"\n  retrain it (python -m sasrec_nb.train --profile {profile.name} --force ...)"
                         " or delete it")
    return ckpt


def stale_result(path: Path, profile: Profile, method: str) -> str | None:
    """Why the results file at ``path`` does not belong to the profile as it is now (None when it does)."""
    saved = json.loads(path.read_text()).get("settings")
    if saved is None:
        return f"{shown(path)} does not record the settings it was produced with (an older version wrote it)"
    changed = changed_settings(saved, profile, run_fields(method))
    if changed:
        return (f"{shown(path)} was produced with other settings than the {profile.name!r} profile has now:\n  "
                + "\n  ".join(changed))
    return None


def shown(path: Path) -> Path:
    """``path`` relative to the project, for messages without machine paths."""
    return path.relative_to(project_root()) if path.is_relative_to(project_root()) else path


def new_model(profile: Profile, split: Split) -> SASRec:
    seed_everything(profile.seed)
    return SASRec(split.num_items, **profile.model_kwargs()).to(device())


def fp32_model(profile: Profile, force: bool = False) -> tuple[SASRec, dict]:
    """The FP32 SASRec of the profile (in eval mode): loaded from its checkpoint, or trained (and saved) first."""
    split = load_split(profile)
    path = checkpoint_dir(profile) / "fp32.pt"
    model = new_model(profile, split)
    ckpt = cached_checkpoint(path, profile, "fp32", force)
    if ckpt is not None:
        load_into(model, ckpt["state_dict"], str(path))
        return model.eval(), ckpt["meta"].get("history", {})
    history = fit(model, split, profile)
    save_checkpoint(path, model, {"profile": profile.to_dict(), "history": history})
    write_json(path.with_suffix(".json"), history)
    write_json(results_dir(profile) / "fp32.json", record(profile, "fp32", "fp32", None, None, model, split, history))
    return model.eval(), history


@torch.no_grad()
def abs_range(x: torch.Tensor, sample: int = 200_000) -> dict[str, float]:
    """The 99th and 99.9th percentile and the max of |x|; the percentiles on a fixed subsample of ``sample``
    values when there are more (quantiles of millions of values are slow)."""
    a = x.abs().flatten().float()
    top = a.max().item()
    if len(a) > sample:
        a = a[torch.randperm(len(a), generator=torch.Generator().manual_seed(0))[:sample]]
    p99, p999 = a.quantile(torch.tensor([0.99, 0.999], device=a.device)).tolist()  # one sort for both
    return {"p99": p99, "p999": p999, "max": top}


class QuantizerTrace:
    """Per-epoch record of every quantizer, for the notebooks' pictures.

    ``scales[name]``: the scale or α (mean over channels). ``stats[name]``: on a fixed probe batch, the
    share of the quantizer's input outside its range, and the 99th / 99.9th percentile and max of |input|.
    """

    def __init__(self, model: nn.Module, probe: torch.Tensor):
        self.probe = probe
        self.scales: dict[str, list[float]] = {n: [] for n in quantizers(model)}
        self.stats: dict[str, list[dict[str, float]]] = {n: [] for n in quantizers(model)}
        self(0, model)

    @torch.no_grad()
    def __call__(self, epoch: int, model: nn.Module) -> None:
        found = quantizers(model)
        was_training = model.training
        model.eval()
        with capture_inputs(found) as inputs:
            model.logits(model(self.probe.to(next(model.parameters()).device)))
        model.train(was_training)
        for name, q in found.items():
            self.scales[name].append(q.scale.float().mean().item())
            x = inputs[name]
            self.stats[name].append({"clipped": q.clipped_fraction(x), **abs_range(x)})


def qat_model(profile: Profile, method: str, weight_bits: int | None = None, act_bits: int | None = None,
              force: bool = False) -> tuple[nn.Module, dict]:
    """A QAT model fine-tuned from the FP32 checkpoint, cached like the FP32 one.

    Returns the model, in eval mode, and its history (with ``quantizer_scales`` per epoch). AdaRound is not QAT:
    use :func:`adaround_model`.
    """
    wb, ab = weight_bits or profile.weight_bits, act_bits or profile.act_bits
    name = run_name(method, wb, ab)
    split = load_split(profile)
    fp32, _ = fp32_model(profile)
    calib = calibration_sequences(split, profile.calib_sequences, profile.seed)
    qmodel = quantize_model(fp32, method, wb, ab, profile.embed_bits)
    path = checkpoint_dir(profile) / f"{name}.pt"
    ckpt = cached_checkpoint(path, profile, method, force)
    if ckpt is not None:
        for q in quantizers(qmodel).values():
            q.initialized.fill_(True)
        load_into(qmodel, ckpt["state_dict"], str(path))
        return qmodel.eval(), ckpt["meta"].get("history", {})
    calibrate_activations(qmodel, calib.split(256))
    trace = QuantizerTrace(qmodel, calib[:128])
    groups = param_groups(qmodel, profile.qat_lr, profile.weight_decay, profile.quant_lr)
    history = fit(qmodel, split, profile, epochs=profile.qat_epochs, lr=profile.qat_lr,
                  param_groups=groups, eval_every=1, patience=max(2, profile.patience), schedule="cosine",
                  windows=profile.qat_windows, on_epoch=trace)
    history["quantizer_scales"], history["quantizer_stats"] = trace.scales, trace.stats
    save_checkpoint(path, qmodel, {"profile": profile.to_dict(), "history": history})
    write_json(path.with_suffix(".json"), history)
    write_json(results_dir(profile) / f"{name}.json",
               record(profile, name, method, wb, ab, qmodel, split, history, baseline=fp32))
    return qmodel.eval(), history


def adaround_model(profile: Profile, weight_bits: int | None = None, act_bits: int | None = None,
                   force: bool = False) -> tuple[nn.Module, dict]:
    """AdaRound post-training quantization of the FP32 checkpoint (no labels, no task loss), in eval mode."""
    from .quant import adaround

    wb, ab = weight_bits or profile.weight_bits, act_bits or profile.act_bits
    name = run_name("adaround", wb, ab)
    split = load_split(profile)
    fp32, _ = fp32_model(profile)
    calib = calibration_sequences(split, profile.calib_sequences, profile.seed)
    path = checkpoint_dir(profile) / f"{name}.pt"
    ckpt = cached_checkpoint(path, profile, "adaround", force)
    if ckpt is not None:
        qmodel = adaround.from_state(fp32, ckpt["state_dict"], wb, ab, profile.embed_bits)
        return qmodel.eval(), ckpt["meta"].get("report", {})
    started = time.perf_counter()
    qmodel, report = adaround.calibrate(fp32, calib, weight_bits=wb, act_bits=ab, embed_bits=profile.embed_bits,
                                        iters=profile.adaround_iters, lr=profile.adaround_lr, seed=profile.seed,
                                        progress=profile.progress)
    seconds = time.perf_counter() - started
    history = {"train_seconds": seconds, "seconds_per_epoch": 0.0, "epochs": []}
    save_checkpoint(path, qmodel, {"profile": profile.to_dict(), "report": report})
    write_json(results_dir(profile) / f"{name}.json",
               record(profile, name, "adaround", wb, ab, qmodel, split, history, baseline=fp32))
    return qmodel.eval(), report


def paired_table(models: dict[str, nn.Module], baseline: nn.Module, split: Split, batch_size: int = 512):
    """Test NDCG@10 of each model against the baseline on the same users: mean difference and its
    paired 95 % confidence interval, for both protocols (a pandas DataFrame)."""
    import pandas as pd

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


def planned_runs(methods: list[str], bits: list[int], act_bits: int) -> list[tuple[str, int | None, int | None]]:
    """FP32 first (every run starts from it), then every method at the first bit width, then the next."""
    runs: list[tuple[str, int | None, int | None]] = [("fp32", None, None)]
    runs += [(m, b, act_bits) for b in bits for m in methods if m != "fp32"]
    return runs


def main(argv: list[str] | None = None) -> int:
    """``python -m sasrec_nb.train``: train FP32 and the QAT methods, write checkpoints and results."""
    import argparse
    import os

    from .config import PROFILES, get_profile
    from .quant import METHODS

    parser = argparse.ArgumentParser(prog="python -m sasrec_nb.train", description=main.__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--all", action="store_true", help="FP32 and every method at every --bits")
    what.add_argument("--method", choices=("fp32",) + METHODS, help="one method (FP32 is trained first if missing)")
    parser.add_argument("--bits", type=int, nargs="+", default=None, help="weight bit widths (default: 8 4)")
    parser.add_argument("--act-bits", type=int, default=8)
    parser.add_argument("--profile", choices=list(PROFILES), default=None, help="default: $SASREC_NB_PROFILE or quick")
    parser.add_argument("--dataset", default=None, help="a registered dataset or a SASRec text file")
    parser.add_argument("--force", action="store_true",
                        help="retrain runs whose results exist (FP32 only with --all or --method fp32: every "
                             "other run starts from it)")
    args = parser.parse_args(argv)
    if args.dataset:
        os.environ["SASREC_NB_DATASET"] = args.dataset
    profile = get_profile(args.profile)
    bits = args.bits or [8, 4]
    runs = planned_runs(list(METHODS) if args.all else [args.method], bits, args.act_bits)
    print(f"profile {profile.name} · dataset {dataset_label(profile.dataset)} · device {device()} · "
          f"{len(runs)} runs", flush=True)
    for method, wb, ab in runs:
        name = run_name(method, wb or 0, ab or 0)
        result = results_dir(profile) / f"{name}.json"
        force = args.force and (method != "fp32" or args.all or args.method == "fp32")
        if result.exists() and not force:
            stale = stale_result(result, profile, method)
            if stale:
                raise SystemExit(f"{stale}\n  redo it with --force (FP32 is redone only with --all or --method fp32)")
            print(f"  {name}: results exist ({shown(result)}); --force to redo")
            continue
        started = time.perf_counter()
        if method == "fp32":
            fp32_model(profile, force=force)
        elif method == "adaround":
            adaround_model(profile, wb, ab, force=force)
        else:
            qat_model(profile, method, wb, ab, force=force)
        print(f"  {name}: done in {time.perf_counter() - started:.0f} s -> {result.name}", flush=True)
    return 0
